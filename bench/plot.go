package main

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// SVG layout, in user units.
const (
	svgW, svgH         = 960, 600
	plotL, plotR       = 80, 760 // plot area, both panels
	latTop, latBottom  = 50, 310 // latency panel (log scale)
	delTop, delBottom  = 380, 540
	legendX            = 780
	svgFont            = `font-family="sans-serif" font-size="12"`
	svgSeriesLineWidth = 1.6
)

type plotSeries struct {
	name  string
	color string
	dash  string
	val   func(r secondRow) float64 // 0 means no value that second
}

// writeSVG draws the timeline: per-second delivery latency p50/p99/max (and
// presence join p99 when there were joins) on a log scale, and deliveries
// per second in total and per server below.
func writeSVG(w io.Writer, rows []secondRow, title string, targets []string) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s>
<rect width="100%%" height="100%%" fill="white"/>
<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>
`, svgW, svgH, svgW, svgH, svgFont, plotL, esc(title))

	lat := []plotSeries{
		{"p50", "#1f77b4", "", func(r secondRow) float64 { return float64(r.P50) }},
		{"p99", "#ff7f0e", "", func(r secondRow) float64 { return float64(r.P99) }},
		{"max", "#d62728", "", func(r secondRow) float64 { return float64(r.Max) }},
	}
	var joins uint64
	for _, r := range rows {
		joins += r.Joins
	}
	if joins > 0 {
		lat = append(lat, plotSeries{"presence join p99", "#2ca02c", "6 3",
			func(r secondRow) float64 { return float64(r.JoinP99) }})
	}
	del := []plotSeries{{"deliveries/s total", "#333333", "", func(r secondRow) float64 { return float64(r.Deliveries) }}}
	if len(targets) > 1 {
		palette := []string{"#9467bd", "#17becf", "#bcbd22", "#8c564b", "#e377c2", "#7f7f7f"}
		for i, t := range targets {
			del = append(del, plotSeries{t, palette[i%len(palette)], "4 2",
				func(r secondRow) float64 { return float64(r.PerNode[i]) }})
		}
	}

	n := len(rows)
	xs := func(t float64) float64 { return plotL + t/float64(max(n, 1))*(plotR-plotL) }
	xTicks := func(bottom int) {
		step := max(niceStep(float64(max(n, 1)), 10), 1)
		for t := 0.0; t <= float64(n)+1e-9; t += step {
			x := xs(t)
			fmt.Fprintf(bw, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>`+"\n", x, bottom, x, bottom+5)
			fmt.Fprintf(bw, `<text x="%.1f" y="%d" text-anchor="middle">%g</text>`+"\n", x, bottom+18, t)
		}
	}

	// Latency panel.
	lo, hi := math.Inf(1), 0.0
	for _, s := range lat {
		for _, r := range rows {
			if v := s.val(r); v > 0 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	frame(bw, latTop, latBottom, "latency (log scale)")
	if hi == 0 {
		fmt.Fprintf(bw, `<text x="%d" y="%d" text-anchor="middle">no data</text>`+"\n", (plotL+plotR)/2, (latTop+latBottom)/2)
	} else {
		dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
		if dhi <= dlo {
			dhi = dlo + 1
		}
		ys := func(v float64) float64 {
			return latBottom - (math.Log10(v)-dlo)/(dhi-dlo)*(latBottom-latTop)
		}
		for d := dlo; d <= dhi; d++ {
			for _, m := range []float64{1, 2, 5} {
				v := m * math.Pow(10, d)
				if (m != 1 && dhi-dlo > 4) || v > math.Pow(10, dhi)+1e-9 {
					continue
				}
				gridY(bw, ys(v), fmtMicros(v), m == 1)
			}
		}
		for _, s := range lat {
			drawSeries(bw, rows, s, xs, ys)
		}
	}
	xTicks(latBottom)
	legend(bw, latTop, lat)

	// Deliveries panel.
	frame(bw, delTop, delBottom, "deliveries per second")
	top := 0.0
	for _, s := range del {
		for _, r := range rows {
			top = max(top, s.val(r))
		}
	}
	step := niceStep(max(top, 1), 5)
	top = math.Ceil(max(top, 1)/step) * step
	ys := func(v float64) float64 { return delBottom - v/top*(delBottom-delTop) }
	for v := 0.0; v <= top+1e-9; v += step {
		gridY(bw, ys(v), fmt.Sprintf("%g", v), true)
	}
	for _, s := range del {
		drawSeries(bw, rows, s, xs, ys)
	}
	xTicks(delBottom)
	legend(bw, delTop, del)
	fmt.Fprintf(bw, `<text x="%d" y="%d" text-anchor="middle">seconds since publishing started</text>`+"\n",
		(plotL+plotR)/2, delBottom+40)
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

func frame(w io.Writer, top, bottom int, label string) {
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="black"/>`+"\n",
		plotL, top, plotR-plotL, bottom-top)
	fmt.Fprintf(w, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">%s</text>`+"\n",
		(top+bottom)/2, esc(label))
}

func gridY(w io.Writer, y float64, label string, major bool) {
	stroke := "#eeeeee"
	if major {
		stroke = "#cccccc"
	}
	fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", plotL, y, plotR, y, stroke)
	fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", plotL-6, y+4, esc(label))
}

// drawSeries draws s as polylines with a dot per second, breaking the line
// where a second has no value.
func drawSeries(w io.Writer, rows []secondRow, s plotSeries, xs, ys func(float64) float64) {
	dash := ""
	if s.dash != "" {
		dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.dash)
	}
	var pts []string
	flush := func() {
		if len(pts) > 1 {
			fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="%g"%s points="%s"/>`+"\n",
				s.color, svgSeriesLineWidth, dash, strings.Join(pts, " "))
		}
		pts = pts[:0]
	}
	for _, r := range rows {
		v := s.val(r)
		if v <= 0 {
			flush()
			continue
		}
		x, y := xs(float64(r.Second)+0.5), ys(v)
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="2" fill="%s"/>`+"\n", x, y, s.color)
	}
	flush()
}

func legend(w io.Writer, top int, series []plotSeries) {
	for i, s := range series {
		y := top + 10 + 18*i
		dash := ""
		if s.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.dash)
		}
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n",
			legendX, y, legendX+24, y, s.color, dash)
		fmt.Fprintf(w, `<text x="%d" y="%d">%s</text>`+"\n", legendX+30, y+4, esc(s.name))
	}
}

// niceStep returns a 1-2-5 step that splits span into at most maxTicks parts.
func niceStep(span float64, maxTicks int) float64 {
	raw := span / float64(maxTicks)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func fmtMicros(v float64) string {
	switch {
	case v < 1e3:
		return fmt.Sprintf("%gµs", v)
	case v < 1e6:
		return fmt.Sprintf("%gms", v/1e3)
	default:
		return fmt.Sprintf("%gs", v/1e6)
	}
}

func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
