package metrics_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"wabridge/metrics"
)

func TestScrapeParsesAndMoves(t *testing.T) {
	depth := 3.0
	m := metrics.New(metrics.Options{
		QueueDepth:     func() float64 { return depth },
		DeadLetters:    func() float64 { return 1 },
		TokenRefreshes: func() (float64, float64) { return 2, 1 },
	})
	scrape := func() map[string]float64 {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
		if err != nil {
			t.Fatalf("not Prometheus text: %v", err)
		}
		out := map[string]float64{}
		for name, f := range fams {
			for _, mt := range f.Metric {
				key := name
				for _, l := range mt.Label {
					key += "," + l.GetName() + "=" + l.GetValue()
				}
				switch {
				case mt.Counter != nil:
					out[key] = mt.Counter.GetValue()
				case mt.Gauge != nil:
					out[key] = mt.Gauge.GetValue()
				case mt.Histogram != nil:
					out[key] = float64(mt.Histogram.GetSampleCount())
				}
			}
		}
		return out
	}
	before := scrape()
	m.Webhook("whatsapp", "accepted")
	m.Webhook("whatsapp", "accepted")
	m.Relayed("inbound", 30*time.Millisecond)
	m.Observer("bitrix")("imconnector.send.messages", 200, 40*time.Millisecond)
	m.Observer("meta")("send", 0, time.Second)
	depth = 5
	after := scrape()
	for key, want := range map[string]float64{
		"wabridge_webhooks_total,source=whatsapp,status=accepted":                         2,
		"wabridge_relay_latency_seconds,direction=inbound":                                1,
		"wabridge_api_calls_total,api=bitrix,method=imconnector.send.messages,result=2xx": 1,
		"wabridge_api_calls_total,api=meta,method=send,result=network":                    1,
		"wabridge_queue_depth":                         5,
		"wabridge_dead_letters":                        1,
		"wabridge_bitrix_token_refreshes_total":        2,
		"wabridge_bitrix_token_refresh_failures_total": 1,
	} {
		if after[key] != want {
			t.Errorf("%s = %v, want %v (before %v)", key, after[key], want, before[key])
		}
	}
	if before["wabridge_queue_depth"] != 3 {
		t.Errorf("queue depth gauge not read at scrape time")
	}
}
