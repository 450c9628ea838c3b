package e2e_test

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkColdStart measures a first start on an empty data folder: from
// exec to the first 200 from /health (database created and migrated,
// development key written, listener up).
func BenchmarkColdStart(b *testing.B) {
	in := &inst{t: b}
	var total time.Duration
	for i := 0; i < b.N; i++ {
		in.data = filepath.Join(b.TempDir(), "data")
		addr := freeAddr(b)
		start := time.Now()
		cmd := exec.Command(binary, "serve", "--listen", addr, "--data", in.data, "--log-format", "json")
		cmd.Env = in.environ(nil)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for {
			resp, err := http.Get("http://" + addr + "/health")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Since(start) > 30*time.Second {
				cmd.Process.Kill()
				b.Fatal("no answer within 30 s")
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
		s := &server{t: b, cmd: cmd, done: make(chan error, 1)}
		go func() { s.done <- cmd.Wait() }()
		s.stop()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/start")
}
