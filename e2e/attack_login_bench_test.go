package e2e_test

import (
	"fmt"
	"net/http"
	"testing"
)

// BenchmarkLoginFlood reports the bridge's peak RSS (VmHWM) while 100
// clients, each from its own loopback address, send wrong admin tokens
// all at once: to the sign-in form (logins_peak_rss_MB) and as /metrics
// bearers (metrics_peak_rss_MB), each on a fresh bridge. A wrong token
// that is checked costs an argon2id run of 19 MiB, so the peak shows how
// many run at once. Also reported: the peak before the flood
// (idle_peak_rss_MB) and, per flood, how many tokens were checked (401)
// and refused unchecked (429 or 503).
func BenchmarkLoginFlood(b *testing.B) {
	const (
		token   = "flood-bench-admin-token-5e4d3c2b1a"
		clients = 100
	)
	// b.ResetTimer drops reported metrics, so they are reported at the end.
	report := map[string]float64{}
	for _, kind := range []string{"logins", "metrics"} {
		in := &inst{t: b, data: b.TempDir(), env: []string{"WABRIDGE_MASTER_KEY=" + newKey(b)}}
		if r := in.run("config", "set", "admin.token="+token); r.code != 0 {
			b.Fatalf("config: %+v", r)
		}
		srv := in.serve()
		pid := srv.cmd.Process.Pid
		idle := peakRSS(pid)
		cs := make([]*http.Client, clients)
		for i := range cs {
			cs[i] = clientFrom(b, fmt.Sprintf("127.0.3.%d", i+1))
		}
		total := map[int]int{}
		b.ResetTimer()
		for n := 0; n < b.N; n++ {
			got := burst(b, clients, func(i int) *http.Client { return cs[i] }, func(i int) *http.Request {
				wrong := fmt.Sprintf("wrong-flood-token-%d-%03d", n, i)
				if kind == "logins" {
					return loginReq(b, srv.url, wrong, "")
				}
				return bearerReq(b, srv.url, wrong)
			})
			for k, v := range got {
				total[k] += v
			}
		}
		b.StopTimer()
		peak := peakRSS(pid)
		srv.stop()
		if total[200]+total[303] != 0 {
			b.Fatalf("%s: a wrong token was accepted: %v", kind, total)
		}
		report[kind+"_peak_rss_MB"] = float64(peak) / (1 << 20)
		report[kind+"_checked/op"] = float64(total[401]) / float64(b.N)
		report[kind+"_refused/op"] = float64(total[429]+total[503]) / float64(b.N)
		if kind == "logins" {
			report["idle_peak_rss_MB"] = float64(idle) / (1 << 20)
		}
	}
	for unit, v := range report {
		b.ReportMetric(v, unit)
	}
}
