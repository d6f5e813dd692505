package ledger

import "testing"

// TestMachinesNeverReenterAState: no state can be reached again from
// itself, in any state machine. state_history's unique key on (entity,
// entity_key, to_state) rests on it: with a cycle, a legal transition
// would be refused by the database.
func TestMachinesNeverReenterAState(t *testing.T) {
	for name, m := range map[string]machine{EntityPayment: paymentMachine, EntityRefund: refundMachine, EntityAnomaly: anomalyMachine} {
		for start := range m {
			if path := m.cycleFrom(start); path != nil {
				t.Errorf("%s machine re-enters %q: %v", name, start, path)
			}
		}
	}
	loop := machine{"A": {"B"}, "B": {"C"}, "C": {"A"}}
	if loop.cycleFrom("A") == nil {
		t.Fatal("cycleFrom misses the cycle A → B → C → A")
	}
}

// cycleFrom returns a path from start back to start, or nil.
func (m machine) cycleFrom(start string) []string {
	seen := map[string]bool{}
	var walk func(s string, path []string) []string
	walk = func(s string, path []string) []string {
		for _, next := range m[s] {
			p := append(append([]string(nil), path...), next)
			if next == start {
				return p
			}
			if !seen[next] {
				seen[next] = true
				if found := walk(next, p); found != nil {
					return found
				}
			}
		}
		return nil
	}
	return walk(start, []string{start})
}
