package sim

import (
	"math"
	"testing"
	"time"
)

// keda100 is KEDA for cfg with a threshold of 100 jobs per pod.
func keda100(cfg KEDAConfig) *KEDA {
	cfg.Threshold = 100
	return NewKEDA(cfg)
}

func TestKEDAActivation(t *testing.T) {
	hpaCases(t, []hpaCase{
		{"at activationThreshold: not active", keda100(KEDAConfig{ActivationThreshold: 5}), 0, []hpaStep{{0, 5, 0}}},
		{"above activationThreshold: 0 to 1", keda100(KEDAConfig{ActivationThreshold: 5}), 0, []hpaStep{{0, 6, 1}}},
		{"default activationThreshold 0: one job activates", keda100(KEDAConfig{}), 0, []hpaStep{{0, 1, 1}}},
		{"default activationThreshold 0: an empty queue does not", keda100(KEDAConfig{}), 0, []hpaStep{{0, 0, 0}}},
		{"no sample reads as 0 (ignoreNullValues)", keda100(KEDAConfig{}), 0, []hpaStep{{0, math.NaN(), 0}}},
		{"from 0 to minReplicaCount when it is above 1", keda100(KEDAConfig{MinReplicaCount: 3}), 0, []hpaStep{{0, 1, 3}}},
		{"activation goes to 1 however deep the queue", keda100(KEDAConfig{}), 0, []hpaStep{{0, 100000, 1}}},
	})
}

func TestKEDAPollingInterval(t *testing.T) {
	hpaCases(t, []hpaCase{
		{
			name:  "a rise between polls waits for the next poll",
			p:     keda100(KEDAConfig{}),
			start: 0,
			// t15 is an HPA sync only, and the HPA is disabled at 0 replicas.
			steps: []hpaStep{{0, 0, 0}, {15, 50, 0}, {30, 50, 1}},
		},
		{
			name:  "a spike between polls is never seen",
			p:     keda100(KEDAConfig{}),
			start: 0,
			steps: []hpaStep{{0, 0, 0}, {15, 1000, 0}, {30, 0, 0}, {45, 1000, 0}, {60, 0, 0}},
		},
		{
			name:  "pollingInterval 60s",
			p:     keda100(KEDAConfig{PollingInterval: time.Minute}),
			start: 0,
			steps: hpaSteps([]hpaStep{{0, 0, 0}}, hpaEvery(15, 45, 50, 0), []hpaStep{{60, 50, 1}}),
		},
		{
			// Decide every 5s; the HPA still syncs every 15s.
			name:  "pollingInterval 5s",
			p:     keda100(KEDAConfig{PollingInterval: 5 * time.Second}),
			start: 0,
			steps: []hpaStep{{0, 0, 0}, {5, 500, 1}, {10, 500, 1}, {15, 500, 4}, {20, 500, 4}, {25, 500, 4}, {30, 500, 5}},
		},
	})
}

func TestKEDACooldown(t *testing.T) {
	// Active polls at t0, t30 and t60 (lastActiveTime t60); idle from t75.
	active := []hpaStep{{0, 50, 1}, {15, 50, 1}, {30, 50, 1}, {45, 50, 1}, {60, 50, 1}}
	hpaCases(t, []hpaCase{
		{
			name:  "to zero 300s after the last active poll, not before",
			p:     keda100(KEDAConfig{}),
			start: 1,
			steps: hpaSteps(active, hpaEvery(75, 345, 0, 1), hpaEvery(360, 420, 0, 0)),
		},
		{
			name:  "cooldownPeriod 60s",
			p:     keda100(KEDAConfig{CooldownPeriod: time.Minute}),
			start: 1,
			steps: hpaSteps(active, hpaEvery(75, 105, 0, 1), []hpaStep{{120, 0, 0}}),
		},
		{
			name:  "an active poll during the cooldown restarts it",
			p:     keda100(KEDAConfig{}),
			start: 1,
			steps: hpaSteps(active, hpaEvery(75, 165, 0, 1), []hpaStep{{180, 3, 1}}, hpaEvery(195, 465, 0, 1), []hpaStep{{480, 0, 0}}),
		},
		{
			name:  "minReplicaCount 2: never to zero",
			p:     keda100(KEDAConfig{MinReplicaCount: 2}),
			start: 2,
			steps: hpaEvery(0, 900, 0, 2),
		},
		{
			name:  "never active: to zero at the first poll (initialCooldownPeriod 0)",
			p:     keda100(KEDAConfig{}),
			start: 3,
			steps: []hpaStep{{0, 0, 0}},
		},
		{
			name:  "never active: initialCooldownPeriod from the ScaledObject's creation",
			p:     keda100(KEDAConfig{InitialCooldownPeriod: 2 * time.Minute}),
			start: 3,
			steps: hpaSteps(hpaEvery(0, 105, 0, 3), []hpaStep{{120, 0, 0}}),
		},
		{
			name:  "below minReplicaCount while idle: raised to it",
			p:     keda100(KEDAConfig{MinReplicaCount: 2}),
			start: 0,
			steps: []hpaStep{{0, 0, 2}},
		},
	})
}

func TestKEDAHPADrivesOneToN(t *testing.T) {
	def := DefaultHPABehavior()
	hpaCases(t, []hpaCase{
		{
			name:  "KEDA's HPA has no spec.behavior: max(2x, 4) per sync",
			p:     keda100(KEDAConfig{}),
			start: 1,
			steps: []hpaStep{{0, 500, 4}, {15, 500, 5}, {30, 500, 5}},
		},
		{
			name:  "with advanced.horizontalPodAutoscalerConfig.behavior",
			p:     keda100(KEDAConfig{Behavior: &def}),
			start: 1,
			steps: []hpaStep{{0, 500, 5}},
		},
		{
			name:  "the whole path: 0, activation, the HPA, its stabilization, the cooldown",
			p:     keda100(KEDAConfig{}),
			start: 0,
			steps: hpaSteps(
				[]hpaStep{{0, 500, 1}, {15, 500, 4}, {30, 500, 5}},
				hpaEvery(45, 315, 100, 5), // the 300s window holds 5 against a proposal of 1
				[]hpaStep{{330, 100, 1}},
				hpaEvery(345, 600, 1, 1),
				hpaEvery(615, 885, 0, 1), // last active poll at t600
				[]hpaStep{{900, 0, 0}},
			),
		},
		{
			name:  "maxReplicaCount",
			p:     keda100(KEDAConfig{MaxReplicaCount: 10}),
			start: 8,
			steps: []hpaStep{{0, 100000, 10}, {15, 100000, 10}},
		},
		{
			name:  "maxReplicaCount defaults to 100",
			p:     keda100(KEDAConfig{}),
			start: 80,
			steps: []hpaStep{{0, 1e9, 100}},
		},
	})
}

func TestKEDAMissingMetric(t *testing.T) {
	nan := math.NaN()
	hpaCases(t, []hpaCase{
		{
			name:  "ignoreNullValues: no sample is an idle queue, so to zero after the cooldown",
			p:     keda100(KEDAConfig{}),
			start: 2,
			steps: hpaSteps([]hpaStep{{0, 50, 2}}, hpaEvery(15, 285, nan, 2), []hpaStep{{300, nan, 0}}),
		},
		{
			name:  "ignoreNullValues false: an error, nothing scales",
			p:     keda100(KEDAConfig{NullIsError: true}),
			start: 2,
			steps: hpaSteps([]hpaStep{{0, 50, 2}}, hpaEvery(15, 900, nan, 2)),
		},
	})
}

func TestKEDAUseCachedMetrics(t *testing.T) {
	def := DefaultHPABehavior()
	hpaCases(t, []hpaCase{
		{
			name:  "the HPA queries Prometheus when it syncs",
			p:     keda100(KEDAConfig{MinReplicaCount: 1, Behavior: &def}),
			start: 1,
			steps: []hpaStep{{0, 100, 1}, {15, 1000, 5}},
		},
		{
			// The HPA goes before the poll at t30, so it still reads t0's value then.
			name:  "useCachedMetrics: the HPA reads the last poll",
			p:     keda100(KEDAConfig{MinReplicaCount: 1, Behavior: &def, UseCachedMetrics: true}),
			start: 1,
			steps: []hpaStep{{0, 100, 1}, {15, 1000, 1}, {30, 1000, 1}, {45, 1000, 5}},
		},
	})
}

func TestKEDAPolicy(t *testing.T) {
	var p Policy = keda100(KEDAConfig{})
	if p.Name() != "keda" {
		t.Errorf("Name() = %q, want keda", p.Name())
	}
	tests := []struct {
		cfg  KEDAConfig
		want time.Duration
	}{
		{KEDAConfig{}, 15 * time.Second},
		{KEDAConfig{PollingInterval: 20 * time.Second}, 5 * time.Second},
		{KEDAConfig{PollingInterval: 5 * time.Second}, 5 * time.Second},
		{KEDAConfig{HPASyncPeriod: 30 * time.Second}, 30 * time.Second},
	}
	for _, tt := range tests {
		if got := keda100(tt.cfg).Period(); got != tt.want {
			t.Errorf("Period() with %+v = %s, want %s", tt.cfg, got, tt.want)
		}
	}
	s := hpaSnap(0, 0, 10)
	want := s.State.Shape
	want.Replicas = 1
	if got := p.Decide(s); got != want {
		t.Errorf("Decide = %+v, want %+v (only Replicas changed)", got, want)
	}
}
