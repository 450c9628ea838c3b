// Completes the installation of wabridge's local application in Bitrix24.
//
// Bitrix24 opens the installation page of an application with an interface
// in a frame, and delivers events to the application (operators' replies
// among them) only after that page has called BX24.installFinish(). The
// page loads Bitrix24's library (api.bitrix24.com/api/v1/) before this file.
(function () {
  "use strict";
  if (typeof window.BX24 === "undefined") {
    // Opened outside Bitrix24, or the library was blocked: nothing to finish.
    return;
  }
  window.BX24.init(function () {
    window.BX24.installFinish();
  });
})();
