package e2e_test

import (
	"bufio"
	"bytes"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/whatsapp/whatsapptest"
)

// loadResult is one load run: throughput and latency percentiles.
type loadResult struct {
	requests int
	failures int
	elapsed  time.Duration
	p50, p99 time.Duration
}

func (r loadResult) perSec() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// load posts body with sig to url from clients goroutines for d.
func load(b *testing.B, url string, body []byte, sig string, clients int, d time.Duration) loadResult {
	b.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var mu sync.Mutex
	var lat []time.Duration
	failures := 0
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			bad := 0
			for time.Now().Before(stop) {
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Hub-Signature-256", sig)
				t0 := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					bad++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			failures += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := loadResult{requests: len(lat), failures: failures, elapsed: time.Since(start)}
	slices.Sort(lat)
	if len(lat) > 0 {
		r.p50 = lat[len(lat)/2]
		r.p99 = lat[len(lat)*99/100]
	}
	return r
}

// peakRSS returns the VmHWM of pid in bytes.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// resetPeakRSS starts pid's VmHWM again from its current RSS.
func resetPeakRSS(b *testing.B, pid int) {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		b.Logf("peak RSS not reset: %v", err)
	}
}

// cpuTime returns the user plus system CPU time pid has used so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields after it are fixed.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	// The kernel counts in clock ticks, 100 per second on Linux.
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// yardstick is a benchserver process (e2e/benchserver) on a free port.
type yardstick struct {
	url string
	cmd *exec.Cmd
}

// startYardstick builds benchserver once per run and starts it in mode.
func startYardstick(b *testing.B, exe, mode string, args ...string) *yardstick {
	b.Helper()
	cmd := exec.Command(exe, append([]string{mode, "127.0.0.1:0", testAppSecret}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if err != nil || !ok {
		b.Fatalf("benchserver %s: %q, %v", mode, line, err)
	}
	return &yardstick{url: "http://" + addr + "/", cmd: cmd}
}

// BenchmarkIngest measures signed-webhook ingest of the real binary —
// every 200 means the payload is committed with synchronous=FULL — against
// two yardsticks with the same client in the same run, each its own
// process like the bridge: a bare handler that only reads the body and
// checks the HMAC (the ratio is measured against it), and the same
// handler that also commits the body through the bridge's own database
// and group-commit writer before answering (the floor: what durability
// alone costs with this storage on this machine). WABRIDGE_BENCH_SECONDS
// sets each run's length (default 5).
func BenchmarkIngest(b *testing.B) {
	secs := 5
	if v, err := strconv.Atoi(os.Getenv("WABRIDGE_BENCH_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	run := time.Duration(secs) * time.Second
	const clients = 32
	body, sig := whatsapptest.NewBuilder().Text("Hallo, ich hätte gern einen Termin am Donnerstag um 10 Uhr. Geht das? Viele Grüße, Anna").Signed(testAppSecret)

	exe := filepath.Join(b.TempDir(), "benchserver")
	build := exec.Command("go", "build", "-tags", "netgo osusergo sqlite_omit_load_extension", "-o", exe, "./benchserver")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build benchserver: %v\n%s", err, out)
	}
	bare := startYardstick(b, exe, "bare")
	floor := startYardstick(b, exe, "durable", filepath.Join(b.TempDir(), "floor.db"))

	in := &inst{t: b, data: b.TempDir(), env: []string{"WABRIDGE_MASTER_KEY=" + newKey(b)}}
	const token = "bench-admin-token-0a1b2c3d4e5f"
	if r := in.run("config", "set", "meta.app_secret="+testAppSecret, "admin.token="+token); r.code != 0 {
		b.Fatalf("config: %+v", r)
	}
	srv := in.serve()
	defer srv.stop()
	hook := srv.url + "/webhook/whatsapp"

	b.ResetTimer()
	// Warm all three up, then measure one after the other.
	for _, u := range []string{bare.url, floor.url, hook} {
		load(b, u, body, sig, clients, time.Second)
	}
	base := load(b, bare.url, body, sig, clients, run)
	dur := load(b, floor.url, body, sig, clients, run)
	// Processing is expected to lag behind the acknowledgements during
	// the burst (see relay/intake.go); how far, and how soon it catches up,
	// is reported too.
	// The backlog is read from the database file rather than /metrics,
	// whose admin-token check (argon2id, 19 MiB) would count in the peak
	// RSS; /metrics is read once, after the run.
	d := openRO(b, in.data)
	waitAll(b, d)
	resetPeakRSS(b, srv.cmd.Process.Pid)
	cpu0 := cpuTime(srv.cmd.Process.Pid)
	real := load(b, hook, body, sig, clients, run)
	cpu := cpuTime(srv.cmd.Process.Pid) - cpu0
	rss := peakRSS(srv.cmd.Process.Pid)
	waiting := float64(waitingIn(b, d))
	drain := waitAll(b, d)
	m := scrapeMetrics(b, srv.url, token)
	b.StopTimer()
	if real.failures > 0 || base.failures > 0 || dur.failures > 0 {
		b.Fatalf("failures: bridge %d, bare %d, floor %d", real.failures, base.failures, dur.failures)
	}
	b.ReportMetric(real.perSec(), "bridge_req/s")
	b.ReportMetric(float64(real.p50.Microseconds())/1000, "bridge_p50_ms")
	b.ReportMetric(float64(real.p99.Microseconds())/1000, "bridge_p99_ms")
	b.ReportMetric(base.perSec(), "bare_req/s")
	b.ReportMetric(float64(base.p99.Microseconds())/1000, "bare_p99_ms")
	b.ReportMetric(dur.perSec(), "floor_req/s")
	b.ReportMetric(float64(dur.p99.Microseconds())/1000, "floor_p99_ms")
	b.ReportMetric(real.perSec()/base.perSec(), "ratio")
	b.ReportMetric(dur.perSec()/base.perSec(), "floor_ratio")
	b.ReportMetric(float64(rss)/(1<<20), "bridge_peak_rss_MB")
	if real.requests > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(real.requests), "bridge_cpu_us/req")
	}
	if commits := m["wabridge_db_commits_total"]; commits > 0 {
		// Since the start, warm-up included.
		b.ReportMetric(m["wabridge_db_group_writes_total"]/commits, "writes/commit")
	}
	b.ReportMetric(waiting, "waiting_at_end")
	b.ReportMetric((float64(real.requests)-waiting)/real.elapsed.Seconds(), "processed_during/s")
	b.ReportMetric(drain.Seconds(), "caught_up_after_s")
}

// waitingIn counts the acknowledged webhooks not yet processed.
func waitingIn(b *testing.B, d *sql.DB) int {
	var n int
	if err := d.QueryRow(`SELECT count(*) FROM webhook_events WHERE status = 'accepted'`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// waitAll waits until the bridge has processed every acknowledged webhook
// and returns how long that took.
func waitAll(b *testing.B, d *sql.DB) time.Duration {
	start := time.Now()
	for waitingIn(b, d) > 0 {
		if time.Since(start) > 5*time.Minute {
			b.Fatal("webhooks still waiting after 5 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}
