package metrics

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// docRow is one metric of the table in docs/metrics.md.
type docRow struct {
	typ    string
	labels []string
}

// readMetricsDoc parses the table of docs/metrics.md: name, type and the
// label names (the backquoted words of the labels column outside the
// parentheses that list their values).
func readMetricsDoc(t *testing.T) map[string]docRow {
	t.Helper()
	b, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	values := regexp.MustCompile(`\([^)]*\)`)
	quoted := regexp.MustCompile("`([a-z_]+)`")
	rows := map[string]docRow{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, "| `registry_edge_") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 5 {
			t.Fatalf("docs/metrics.md: row without type and labels: %s", line)
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		row := docRow{typ: strings.TrimSpace(cells[2])}
		for _, m := range quoted.FindAllStringSubmatch(values.ReplaceAllString(cells[3], ""), -1) {
			row.labels = append(row.labels, m[1])
		}
		if _, dup := rows[name]; dup {
			t.Errorf("docs/metrics.md lists %s twice", name)
		}
		rows[name] = row
	}
	return rows
}

// touchAll creates one child of every vector in m (found by reflection, so
// that a new field needs no line here), so that Gather reports it with its
// labels.
func touchAll(t *testing.T, v reflect.Value) {
	t.Helper()
	for i := range v.NumField() {
		f := v.Field(i)
		if !v.Type().Field(i).IsExported() {
			continue
		}
		if f.Kind() == reflect.Struct {
			touchAll(t, f)
			continue
		}
		get := f.MethodByName("GetMetricWithLabelValues")
		if !get.IsValid() {
			continue
		}
		// The number of labels is not exported: the vector refuses a
		// wrong count.
		for n := 0; ; n++ {
			if n > 8 {
				t.Fatalf("%s: no label count up to 8 accepted", v.Type().Field(i).Name)
			}
			args := make([]reflect.Value, n)
			for j := range args {
				args[j] = reflect.ValueOf("x")
			}
			if out := get.Call(args); out[1].IsNil() {
				break
			}
		}
	}
}

// Every metric the mirror registers is in the table of docs/metrics.md
// with its type and its labels, and the table lists nothing else.
func TestDocsListEveryMetricWithItsLabels(t *testing.T) {
	m := New()
	m.SetPrefetchSource(func() PrefetchProgress { return PrefetchProgress{} })
	m.AddUpstream("x", func() UpstreamHealth { return UpstreamHealth{} })
	touchAll(t, reflect.ValueOf(m).Elem())
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[dto.MetricType]string{
		dto.MetricType_COUNTER:   "counter",
		dto.MetricType_GAUGE:     "gauge",
		dto.MetricType_HISTOGRAM: "histogram",
	}
	doc := readMetricsDoc(t)
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "registry_edge_") {
			continue
		}
		row, ok := doc[name]
		if !ok {
			t.Errorf("%s is not in the table of docs/metrics.md", name)
			continue
		}
		delete(doc, name)
		if typ := types[mf.GetType()]; row.typ != typ {
			t.Errorf("%s: docs/metrics.md says %s, the mirror exports a %s", name, row.typ, typ)
		}
		var labels []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, lp.GetName())
		}
		want, got := slices.Sorted(slices.Values(row.labels)), slices.Sorted(slices.Values(labels))
		if !slices.Equal(want, got) {
			t.Errorf("%s: docs/metrics.md lists labels %v, the mirror exports %v", name, row.labels, labels)
		}
	}
	for name := range doc {
		t.Errorf("docs/metrics.md lists %s, which the mirror does not export", name)
	}
}
