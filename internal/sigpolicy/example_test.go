package sigpolicy_test

import (
	"errors"
	"fmt"

	"github.com/registry-edge/registry-edge/internal/sigpolicy"
)

// A config package checks the policy with New and reports each problem
// under its own key, here "signatures".
func ExampleNew() {
	_, err := sigpolicy.New(sigpolicy.Spec{
		DefaultMode: sigpolicy.ModeOff,
		Rules: []sigpolicy.RuleSpec{{
			Name:         "fleet",
			Repositories: []string{"central.example.com/fleet/**", "central.example.com//x"},
			Keys:         []string{"not a key"},
			RequireTlog:  true,
		}},
	})
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		for _, e := range joined.Unwrap() {
			var fe *sigpolicy.FieldError
			if errors.As(e, &fe) {
				fmt.Printf("signatures.%s: %s\n", fe.Path, fe.Msg)
			}
		}
	}
	// Output:
	// signatures.rules[0].repositories[1]: bad glob: empty segment (leading, trailing or double "/"): "central.example.com//x"
	// signatures.rules[0].keys[0]: not a PEM public key (want a "PUBLIC KEY" block)
	// signatures.rules[0].rekorKeys: required with requireTlog
}

// The mirror asks which rule applies before it looks for a cached verdict,
// and skips verification under mode off.
func ExamplePolicy_Match() {
	p, err := sigpolicy.New(sigpolicy.Spec{
		Rules: []sigpolicy.RuleSpec{
			{Name: "debug", Repositories: []string{"central.example.com/fleet/debug/**"}, Mode: sigpolicy.ModeOff},
		},
		DefaultMode: sigpolicy.ModeWarn,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, repo := range []string{"fleet/debug/shell", "fleet/app"} {
		m := p.Match("central.example.com", repo)
		fmt.Printf("%s: rule %s, mode %s\n", repo, m.Rule, m.Mode)
	}
	// Output:
	// fleet/debug/shell: rule debug, mode off
	// fleet/app: rule default, mode warn
}
