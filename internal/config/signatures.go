package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/registry-edge/registry-edge/internal/sigpolicy"
)

// SignaturePolicy returns the compiled signature policy (issue #6): the
// signatures block with every PEM field that names a file replaced by the
// file's content. It returns nil, nil when no rule is configured and the
// default mode is off. Errors are FieldErrors under "signatures.".
func (c Config) SignaturePolicy() (*sigpolicy.Policy, error) {
	spec, errs := c.resolvedSignatures()
	if len(spec.Rules) == 0 && (spec.DefaultMode == "" || spec.DefaultMode == sigpolicy.ModeOff) && len(errs) == 0 {
		return nil, nil
	}
	p, err := sigpolicy.New(spec)
	if err != nil {
		// A file that could not be read is reported once, as such.
		seen := map[string]bool{}
		for _, e := range errs {
			seen[e.(*FieldError).Path] = true
		}
		errs = append(errs, prefixSigErrors(err, seen)...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// resolvedSignatures reads the PEM files the signatures block names. A PEM
// field holds either PEM text ("-----BEGIN ...") or the path of a file
// holding it.
func (c Config) resolvedSignatures() (sigpolicy.Spec, []error) {
	spec := c.Signatures
	spec.Rules = append([]sigpolicy.RuleSpec(nil), spec.Rules...)
	var errs []error
	read := func(path string, vals []string) []string {
		out := make([]string, len(vals))
		for i, v := range vals {
			out[i] = v
			if strings.Contains(v, "-----BEGIN") || strings.TrimSpace(v) == "" {
				continue
			}
			b, err := os.ReadFile(v)
			if err != nil {
				errs = append(errs, fieldErr(fmt.Sprintf("%s[%d]", path, i), fmt.Sprintf("neither PEM nor a readable file: %v", err)))
				continue
			}
			out[i] = string(b)
		}
		return out
	}
	for i := range spec.Rules {
		r := &spec.Rules[i]
		p := fmt.Sprintf("signatures.rules[%d]", i)
		r.Keys = read(p+".keys", r.Keys)
		r.FulcioRoots = read(p+".fulcioRoots", r.FulcioRoots)
		r.FulcioIntermediates = read(p+".fulcioIntermediates", r.FulcioIntermediates)
		r.RekorKeys = read(p+".rekorKeys", r.RekorKeys)
	}
	return spec, errs
}

// prefixSigErrors puts "signatures." before the field paths of sigpolicy's
// errors, leaving out those of the paths in skip.
func prefixSigErrors(err error, skip map[string]bool) []error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var fe *sigpolicy.FieldError
		if errors.As(e, &fe) {
			if p := "signatures." + fe.Path; !skip[p] {
				out = append(out, fieldErr(p, fe.Msg))
			}
			return
		}
		out = append(out, fieldErr("signatures", e.Error()))
	}
	walk(err)
	return out
}
