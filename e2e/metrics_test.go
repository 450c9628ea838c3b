package e2e_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"wabridge/whatsapp/whatsapptest"
)

// scrapeMetrics fetches /metrics with the bearer token and returns each
// sample's value by name and labels.
func scrapeMetrics(t testing.TB, url, token string) map[string]float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics with the token: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			key := name
			for _, l := range m.Label {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

// TestMetrics: /metrics is refused without the admin login or token, parses
// as Prometheus text with it, and moves when a message flows.
func TestMetrics(t *testing.T) {
	b := connectedBridge(t)
	const token = "metrics-admin-token-5f4e3d2c1b"
	if r := b.in.run("config", "set", "admin.token="+token); r.code != 0 {
		t.Fatalf("config: %+v", r)
	}
	resp, err := http.Get(b.srv.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, resp); resp.StatusCode == 200 {
		t.Fatal("/metrics answered without authentication")
	}
	req, _ := http.NewRequest(http.MethodGet, b.srv.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer wrong-token-123456789")
	resp, _ = http.DefaultClient.Do(req)
	if readAll(t, resp); resp.StatusCode == 200 {
		t.Fatal("/metrics answered a wrong token")
	}
	before := scrapeMetrics(t, b.srv.url, token)
	b.post(t, whatsapptest.NewBuilder().Text("Zählt das mit?"))
	b.waitSent(t, 1)
	// The portal has the message before the bridge has read the portal's
	// answer and recorded the latency: wait for that.
	after := scrapeMetrics(t, b.srv.url, token)
	for deadline := time.Now().Add(10 * time.Second); after["wabridge_relay_latency_seconds,direction=inbound"] <= before["wabridge_relay_latency_seconds,direction=inbound"] && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		after = scrapeMetrics(t, b.srv.url, token)
	}
	for _, key := range []string{
		"wabridge_webhooks_total,source=whatsapp,status=accepted",
		"wabridge_api_calls_total,api=bitrix,method=imconnector.send.messages,result=2xx",
		"wabridge_relay_latency_seconds,direction=inbound",
	} {
		if after[key] <= before[key] {
			t.Errorf("%s did not move: %v → %v", key, before[key], after[key])
		}
	}
	for _, key := range []string{"wabridge_queue_depth", "wabridge_webhooks_waiting", "wabridge_intake_pauses_total"} {
		if _, ok := after[key]; !ok {
			t.Errorf("no %s", key)
		}
	}
	if c, w := after["wabridge_db_commits_total"], after["wabridge_db_group_writes_total"]; c <= before["wabridge_db_commits_total"] || w < c {
		t.Errorf("group commits %v carrying %v writes (before: %v, %v)", c, w, before["wabridge_db_commits_total"], before["wabridge_db_group_writes_total"])
	}
	b.srv.stop()
}
