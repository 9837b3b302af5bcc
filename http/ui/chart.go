package ui

import (
	"fmt"
	"math"
	"time"
)

// The chart's geometry, in SVG user units: a line of listed leases above, and below a
// zero line, bars of creates (up) and drops (down) per bin.
const (
	chartLeft   = 44.0
	chartWidth  = 720.0
	lineTop     = 12.0
	lineHeight  = 96.0
	barsZero    = 176.0
	barsHeight  = 44.0
	chartHeight = 246
)

// chart is one target's SVG, ready for the template: numbers rounded, titles written.
type chart struct {
	RecordUID, Name   string
	Height            int
	Line              string // polyline points
	Bars              []bar
	Ticks             []tick
	MaxActive, MaxBar int
	Now, Created      int
	Dropped           int
	// Where the axes' labels go.
	LineTopY, LineBottomY, BarsTopY, BarsBottomY, ZeroY, LabelX, Right float64
}

type bar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

type tick struct {
	X, Y  float64
	Label string
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }

func drawChart(uid, name string, s *series, w window) chart {
	c := chart{RecordUID: uid, Name: name, Height: chartHeight, LineTopY: lineTop, LineBottomY: lineTop + lineHeight,
		BarsTopY: barsZero - barsHeight, BarsBottomY: barsZero + barsHeight, ZeroY: barsZero, LabelX: chartLeft - 6, Right: chartLeft + chartWidth}
	if w.n == 0 {
		return c
	}
	for i := range w.n {
		c.MaxActive = max(c.MaxActive, s.Active[i])
		c.MaxBar = max(c.MaxBar, s.Created[i], s.Dropped[i])
		c.Created += s.Created[i]
		c.Dropped += s.Dropped[i]
	}
	c.Now = s.Active[w.n-1]
	c.MaxActive, c.MaxBar = max(c.MaxActive, 1), max(c.MaxBar, 1)
	bw := chartWidth / float64(w.n)
	points := make([]byte, 0, w.n*12)
	for i := range w.n {
		x := chartLeft + (float64(i)+0.5)*bw
		y := lineTop + lineHeight - float64(s.Active[i])/float64(c.MaxActive)*lineHeight
		points = fmt.Appendf(points, "%g,%g ", round1(x), round1(y))
		from := w.start.Add(time.Duration(i) * w.bin).UTC()
		span := from.Format("15:04") + "–" + from.Add(w.bin).Format("15:04") + " UTC"
		if n := s.Created[i]; n > 0 {
			h := float64(n) / float64(c.MaxBar) * barsHeight
			c.Bars = append(c.Bars, bar{X: round1(chartLeft + float64(i)*bw), Y: round1(barsZero - h), W: round1(max(bw-0.5, 0.5)), H: round1(h),
				Class: "created", Title: fmt.Sprintf("%s: %d created", span, n)})
		}
		if n := s.Dropped[i]; n > 0 {
			h := float64(n) / float64(c.MaxBar) * barsHeight
			c.Bars = append(c.Bars, bar{X: round1(chartLeft + float64(i)*bw), Y: barsZero, W: round1(max(bw-0.5, 0.5)), H: round1(h),
				Class: "dropped", Title: fmt.Sprintf("%s: %d dropped", span, n)})
		}
	}
	c.Line = string(points)
	c.Ticks = ticks(w)
	return c
}

// ticks labels the time axis about every sixth of the window, on round times.
func ticks(w window) []tick {
	span := w.end.Sub(w.start)
	step := time.Hour
	for _, s := range []time.Duration{10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour} {
		if span/s <= 6 {
			step = s
			break
		}
	}
	var out []tick
	for t := w.start.Truncate(step); !t.After(w.end); t = t.Add(step) {
		if t.Before(w.start) {
			continue
		}
		x := chartLeft + float64(t.Sub(w.start))/float64(span)*chartWidth
		out = append(out, tick{X: round1(x), Y: chartHeight - 4, Label: t.UTC().Format("15:04")})
	}
	return out
}
