package metrics

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Handler serves the registry in the Prometheus text format or, with a
// non-empty ?json= query, as a JSON array shaped like prom-client's
// getMetricsAsJSON, as soketi does.
func (m *Metrics) Handler() http.Handler {
	text := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("json") == "" {
			text.ServeHTTP(w, r)
			return
		}
		families, err := m.reg.Gather()
		if err != nil {
			http.Error(w, "A server error has occurred.", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(asJSON(families))
	})
}

type jsonMetric struct {
	Help       string      `json:"help"`
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Values     []jsonValue `json:"values"`
	Aggregator string      `json:"aggregator"`
}

type jsonValue struct {
	Value      any            `json:"value"`
	Labels     map[string]any `json:"labels"`
	MetricName string         `json:"metricName,omitempty"`
}

func asJSON(families []*dto.MetricFamily) []jsonMetric {
	out := make([]jsonMetric, 0, len(families))
	for _, f := range families {
		jm := jsonMetric{
			Help: f.GetHelp(), Name: f.GetName(), Aggregator: "sum",
			Type: strings.ToLower(f.GetType().String()), Values: []jsonValue{},
		}
		for _, mt := range f.GetMetric() {
			labels := func(extra ...any) map[string]any {
				l := make(map[string]any, len(mt.GetLabel())+1)
				for _, lp := range mt.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				for i := 0; i+1 < len(extra); i += 2 {
					l[extra[i].(string)] = extra[i+1]
				}
				return l
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				jm.Values = append(jm.Values, jsonValue{Value: number(mt.GetCounter().GetValue()), Labels: labels()})
			case dto.MetricType_GAUGE:
				jm.Values = append(jm.Values, jsonValue{Value: number(mt.GetGauge().GetValue()), Labels: labels()})
			case dto.MetricType_UNTYPED:
				jm.Values = append(jm.Values, jsonValue{Value: number(mt.GetUntyped().GetValue()), Labels: labels()})
			case dto.MetricType_HISTOGRAM:
				h := mt.GetHistogram()
				for _, b := range h.GetBucket() {
					jm.Values = append(jm.Values, jsonValue{Value: b.GetCumulativeCount(),
						Labels: labels("le", number(b.GetUpperBound())), MetricName: f.GetName() + "_bucket"})
				}
				jm.Values = append(jm.Values,
					jsonValue{Value: h.GetSampleCount(), Labels: labels("le", "+Inf"), MetricName: f.GetName() + "_bucket"},
					jsonValue{Value: number(h.GetSampleSum()), Labels: labels(), MetricName: f.GetName() + "_sum"},
					jsonValue{Value: h.GetSampleCount(), Labels: labels(), MetricName: f.GetName() + "_count"})
			case dto.MetricType_SUMMARY:
				s := mt.GetSummary()
				for _, q := range s.GetQuantile() {
					jm.Values = append(jm.Values, jsonValue{Value: number(q.GetValue()), Labels: labels("quantile", q.GetQuantile())})
				}
				jm.Values = append(jm.Values,
					jsonValue{Value: number(s.GetSampleSum()), Labels: labels(), MetricName: f.GetName() + "_sum"},
					jsonValue{Value: s.GetSampleCount(), Labels: labels(), MetricName: f.GetName() + "_count"})
			}
		}
		out = append(out, jm)
	}
	return out
}

// number keeps values JSON can carry as numbers; NaN and infinities, which
// it cannot, become strings as in the text format.
func number(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return v
}
