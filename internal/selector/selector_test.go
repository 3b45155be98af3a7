package selector

import (
	"reflect"
	"testing"

	"github.com/workerscale/workerscale/rules"
)

func testRules() *rules.Rules {
	w := func(name, ns, budget string) rules.Workload {
		return rules.Workload{Name: name, Target: rules.Target{Kind: "Deployment", Namespace: ns, Name: name}, RateBudget: budget}
	}
	return &rules.Rules{File: "rules.yaml", Workloads: []rules.Workload{
		w("render", "luneo", ""),
		w("characters", "blizzard", "osint"),
		w("guilds", "blizzard", "osint"),
		w("auctions", "market", "dma"),
		w("items", "market", "dma"),
	}}
}

func TestFilter(t *testing.T) {
	r := testRules()
	for _, tc := range []struct {
		name string
		s    Selector
		want []string
	}{
		{"empty selects all", Selector{}, []string{"render", "characters", "guilds", "auctions", "items"}},
		{"one namespace", Selector{Namespaces: []string{"blizzard"}}, []string{"characters", "guilds"}},
		{"two namespaces, file order", Selector{Namespaces: []string{"market", "luneo"}}, []string{"render", "auctions", "items"}},
		{"names", Selector{Workloads: []string{"items", "render"}}, []string{"render", "items"}},
		{"namespace and name", Selector{Namespaces: []string{"market"}, Workloads: []string{"items"}}, []string{"items"}},
		{"name outside the namespace", Selector{Namespaces: []string{"luneo"}, Workloads: []string{"items"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.s.Filter(r)
			var got []string
			for _, w := range f.Workloads {
				got = append(got, w.Name)
			}
			if !reflect.DeepEqual(got, tc.want) || !reflect.DeepEqual(tc.s.Names(r), tc.want) {
				t.Errorf("Filter = %v, Names = %v; want %v", got, tc.s.Names(r), tc.want)
			}
			if len(r.Workloads) != 5 {
				t.Errorf("Filter changed its input: %d workloads", len(r.Workloads))
			}
			if tc.s.Empty() != (f == r) {
				t.Errorf("an empty selector returns the rules themselves, another a copy")
			}
		})
	}
}

func TestCheck(t *testing.T) {
	r := testRules()
	for _, tc := range []struct {
		name  string
		s     Selector
		field string // "" when the selection is fine
		msg   string
	}{
		{"fine", Selector{Namespaces: []string{"luneo"}, Workloads: []string{"render"}}, "", ""},
		{"unknown workload", Selector{Workloads: []string{"rendr"}}, FieldWorkload,
			`no workload "rendr" in rules.yaml (render, characters, guilds, auctions, items)`},
		{"workload outside the namespaces", Selector{Namespaces: []string{"market"}, Workloads: []string{"render"}}, FieldWorkload,
			`workload "render" is in namespace luneo, not in market`},
		{"empty namespace", Selector{Namespaces: []string{"lunoe"}}, FieldNamespace,
			`no workload of rules.yaml is in namespace "lunoe" (its namespaces: blizzard, luneo, market)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Check(r)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				return
			}
			p, ok := err.(*Problem)
			if !ok || p.Field != tc.field || p.Msg != tc.msg {
				t.Errorf("Check = %#v; want %s: %s", err, tc.field, tc.msg)
			}
		})
	}
}

func TestSharedBudgets(t *testing.T) {
	r := testRules()
	for _, tc := range []struct {
		s    Selector
		want map[string][]string
	}{
		{Selector{}, map[string][]string{}},
		{Selector{Namespaces: []string{"blizzard"}}, map[string][]string{}},
		{Selector{Workloads: []string{"characters"}}, map[string][]string{"osint": {"guilds"}}},
		{Selector{Workloads: []string{"auctions", "render", "characters"}}, map[string][]string{"osint": {"guilds"}, "dma": {"items"}}},
	} {
		if got := tc.s.SharedBudgets(r); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.s, got, tc.want)
		}
	}
}

func TestString(t *testing.T) {
	for s, want := range map[*Selector]string{
		{}:                              "every workload",
		{Namespaces: []string{"a"}}:     "namespace a",
		{Workloads: []string{"x", "y"}}: "workloads x, y",
		{Namespaces: []string{"a", "b"}, Workloads: []string{"x"}}: "namespaces a, b; workload x",
	} {
		if got := s.String(); got != want {
			t.Errorf("%#v: %q, want %q", *s, got, want)
		}
	}
}
