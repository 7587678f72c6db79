package access

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func htpasswd(t *testing.T, users map[string]string) string {
	t.Helper()
	var b []byte
	b = append(b, "# comment\n\n"...)
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, u+":"+string(h)+"\n"...)
	}
	f := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestCheck(t *testing.T) {
	file := htpasswd(t, map[string]string{"alice": "wonderland", "bob": "builder"})
	rules := []Rule{
		{Repositories: []string{"private/*", "ghcr.io/acme/*", "secret/**"}, Users: []string{"alice"}, Certs: []string{"device-*"}},
	}
	open, err := New(Options{Anonymous: true, HtpasswdFile: file, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	closed, err := New(Options{Anonymous: false, HtpasswdFile: file, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	challenging, err := New(Options{Anonymous: true, HtpasswdFile: file, Rules: rules, ChallengeBase: true})
	if err != nil {
		t.Fatal(err)
	}
	certsOnly, err := New(Options{Anonymous: true, Rules: []Rule{{Repositories: []string{"private/*"}, Certs: []string{"device-*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	type cred struct {
		user, pass, cert string
		basic            bool // send the Basic pair even if empty
	}
	for _, tt := range []struct {
		name string
		p    *Policy
		c    cred
		repo string
		want error
	}{
		{"anonymous, open repo", open, cred{}, "library/alpine", nil},
		{"anonymous, base", open, cred{}, "", nil},
		// With challengeBase, the base challenges anonymous clients (they
		// may go on anonymously) so that clients with credentials send them.
		{"challengeBase: anonymous, base", challenging, cred{}, "", errdef.ErrUnauthorized},
		{"challengeBase: allowed user, base", challenging, cred{user: "alice", pass: "wonderland"}, "", nil},
		{"challengeBase: empty Basic pair, base", challenging, cred{basic: true}, "", errdef.ErrUnauthorized},
		{"challengeBase: anonymous, open repo", challenging, cred{}, "library/alpine", nil},
		{"empty Basic pair, base", open, cred{basic: true}, "", nil},
		{"empty Basic pair, open repo", open, cred{basic: true}, "library/alpine", nil},
		{"empty Basic pair, restricted repo", open, cred{basic: true}, "private/app", errdef.ErrUnauthorized},
		{"no users: anonymous, base", certsOnly, cred{}, "", nil},
		{"no users: anonymous, restricted repo", certsOnly, cred{}, "private/app", errdef.ErrUnauthorized},
		{"anonymous, restricted repo", open, cred{}, "private/app", errdef.ErrUnauthorized},
		{"allowed user, restricted repo", open, cred{user: "alice", pass: "wonderland"}, "private/app", nil},
		{"other user, restricted repo", open, cred{user: "bob", pass: "builder"}, "private/app", errdef.ErrDenied},
		// Wrong credentials read what anonymous clients may (stale ones on a
		// device must not cut it off open repositories), and nothing else.
		{"wrong password, open repo", open, cred{user: "alice", pass: "nope"}, "library/alpine", nil},
		{"unknown user, open repo", open, cred{user: "eve", pass: "x"}, "library/alpine", nil},
		{"wrong password, base", open, cred{user: "alice", pass: "nope"}, "", errdef.ErrUnauthorized},
		{"wrong password, restricted repo", open, cred{user: "alice", pass: "nope"}, "private/app", errdef.ErrUnauthorized},
		{"closed: wrong password, open repo", closed, cred{user: "bob", pass: "nope"}, "library/alpine", errdef.ErrUnauthorized},
		{"allowed cert, restricted repo", open, cred{cert: "device-7"}, "ghcr.io/acme/fw", nil},
		{"other cert, restricted repo", open, cred{cert: "laptop"}, "ghcr.io/acme/fw", errdef.ErrDenied},
		{"'*' does not cross '/'", open, cred{}, "private/team/app", nil},
		{"'**' crosses '/'", open, cred{}, "secret/team/app", errdef.ErrUnauthorized},
		{"'**' matches one segment", open, cred{}, "secret/app", errdef.ErrUnauthorized},
		{"'**' ends at its prefix", open, cred{}, "secretive/app", nil},
		{"closed: anonymous, base", closed, cred{}, "", errdef.ErrUnauthorized},
		{"closed: anonymous, open repo", closed, cred{}, "library/alpine", errdef.ErrUnauthorized},
		{"closed: any user, open repo", closed, cred{user: "bob", pass: "builder"}, "library/alpine", nil},
		{"closed: cert, base", closed, cred{cert: "laptop"}, "", nil},
		// A verified certificate still counts next to stale credentials.
		{"allowed cert, wrong password, restricted repo", open, cred{cert: "device-7", user: "alice", pass: "nope"}, "private/app", nil},
		{"closed: cert, wrong password, open repo", closed, cred{cert: "laptop", user: "bob", pass: "nope"}, "library/alpine", nil},
		{"other cert, wrong password, restricted repo", open, cred{cert: "laptop", user: "alice", pass: "nope"}, "private/app", errdef.ErrUnauthorized},
		{"cert, wrong password, base", closed, cred{cert: "laptop", user: "bob", pass: "nope"}, "", errdef.ErrUnauthorized},
	} {
		r := httptest.NewRequest("GET", "/v2/", nil)
		if tt.c.user != "" || tt.c.basic {
			r.SetBasicAuth(tt.c.user, tt.c.pass)
		}
		if tt.c.cert != "" {
			r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{Subject: pkix.Name{CommonName: tt.c.cert}}}}}
		}
		_, err := tt.p.Check(r, tt.repo, nil)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: Check = %v, want %v", tt.name, err, tt.want)
		}
		// The second time answers from the remembered password.
		if tt.c.user != "" {
			if _, err2 := tt.p.Check(r, tt.repo, nil); (err == nil) != (err2 == nil) {
				t.Errorf("%s: second Check = %v, first %v", tt.name, err2, err)
			}
		}
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	md5 := filepath.Join(dir, "md5")
	os.WriteFile(md5, []byte("alice:$apr1$abc$def\n"), 0o600)
	noColon := filepath.Join(dir, "nocolon")
	os.WriteFile(noColon, []byte("alice\n"), 0o600)
	// Each error names the setting (a reload's log line says what to fix).
	for name, tt := range map[string]struct {
		o    Options
		want string
	}{
		"missing file":     {Options{HtpasswdFile: filepath.Join(dir, "none")}, "access.htpasswd: open "},
		"not bcrypt":       {Options{HtpasswdFile: md5}, "access.htpasswd " + md5 + " line 1 (user alice): only bcrypt"},
		"malformed line":   {Options{HtpasswdFile: noColon}, "access.htpasswd " + noColon + " line 1: want user:hash"},
		"bad rule pattern": {Options{Rules: []Rule{{Repositories: []string{"a/["}}}}, "access.rules[0].repositories: "},
		"upper case":       {Options{Rules: []Rule{{Repositories: []string{"Private/*"}}}}, "access.rules[0].repositories: "},
		"leading slash":    {Options{Rules: []Rule{{Repositories: []string{"/private/*"}}}}, "access.rules[0].repositories: "},
		"trailing slash":   {Options{Rules: []Rule{{Repositories: []string{"private/"}}}}, "access.rules[0].repositories: "},
		"bad user pattern": {Options{Rules: []Rule{{Repositories: []string{"a/*"}, Users: []string{"["}}}}, "access.rules[0]: pattern"},
	} {
		_, err := New(tt.o)
		switch {
		case err == nil:
			t.Errorf("%s: New succeeded", name)
		case !strings.Contains(err.Error(), tt.want):
			t.Errorf("%s: %v, want %q", name, err, tt.want)
		}
	}
}

// An unknown user's password is checked against a hash as costly as the
// users' dearest, so that the time of a failed login does not tell whether
// the user exists.
func TestUnknownUserCostsAsMuchAsAKnownOne(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost+2)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(f, []byte("alice:"+string(h)+"\n"), 0o600)
	p, err := New(Options{Anonymous: true, HtpasswdFile: f})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := bcrypt.Cost(p.dummy); err != nil || c != bcrypt.MinCost+2 {
		t.Errorf("the unknown-user hash has cost %d (%v), want %d", c, err, bcrypt.MinCost+2)
	}
}

// A pair that failed is refused again without bcrypt for a while: a device
// with stale credentials sends them with every request.
func TestFailedPairIsRemembered(t *testing.T) {
	f := htpasswd(t, map[string]string{"alice": "wonderland"})
	p, err := New(Options{Anonymous: true, HtpasswdFile: f})
	if err != nil {
		t.Fatal(err)
	}
	if p.checkPassword("alice", "stale") {
		t.Fatal("a wrong password verified")
	}
	// Were bcrypt asked again, this hash would now accept "stale".
	h, _ := bcrypt.GenerateFromPassword([]byte("stale"), bcrypt.MinCost)
	p.users["alice"] = h
	if p.checkPassword("alice", "stale") {
		t.Error("a pair that failed a moment ago was checked with bcrypt again")
	}
}

// Password hashes wait for a slot (at most half the processors hash at
// once): with every slot taken, a login does not hash until one frees.
func TestHashingWaitsForASlot(t *testing.T) {
	f := htpasswd(t, map[string]string{"alice": "wonderland"})
	p, err := New(Options{Anonymous: true, HtpasswdFile: f})
	if err != nil {
		t.Fatal(err)
	}
	for range cap(bcryptSlots) {
		bcryptSlots <- struct{}{}
	}
	done := make(chan bool)
	go func() { done <- p.checkPassword("alice", "wonderland") }()
	select {
	case <-done:
		t.Fatal("a password was hashed while every slot was taken")
	case <-time.After(100 * time.Millisecond):
	}
	for range cap(bcryptSlots) {
		<-bcryptSlots
	}
	if !<-done {
		t.Error("the right password did not verify once a slot was free")
	}
}

// A rule naming a user the htpasswd file does not have (a typo) is named,
// with its field path; patterns and known users are not.
func TestUnknownUsers(t *testing.T) {
	t.Parallel()
	p, err := New(Options{HtpasswdFile: htpasswd(t, map[string]string{"alice": "wonderland", "bob": "builder"}), Rules: []Rule{
		{Repositories: []string{"private/**"}, Users: []string{"alice", "alcie"}},
		{Repositories: []string{"team/**"}, Users: []string{"bo*", "bob"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := (*Policy)(nil).UnknownUsers(); got != nil {
		t.Errorf("no policy (access open to all): UnknownUsers = %q", got)
	}
	want := []string{`access.rules[0].users: "alcie" is not a user of the htpasswd file`}
	if got := p.UnknownUsers(); !slices.Equal(got, want) {
		t.Errorf("UnknownUsers = %q, want %q", got, want)
	}
}

// A reload keeps the passwords verified before for the users whose hash
// did not change (no bcrypt again for every device of the site), and only
// for them.
func TestReloadKeepsVerifiedPasswords(t *testing.T) {
	t.Parallel()
	f := htpasswd(t, map[string]string{"alice": "wonderland", "bob": "builder"})
	p1, err := New(Options{HtpasswdFile: f})
	if err != nil {
		t.Fatal(err)
	}
	if !p1.checkPassword("alice", "wonderland") || !p1.checkPassword("bob", "builder") {
		t.Fatal("the right passwords did not verify")
	}
	var d Dynamic
	d.Set(p1)
	p2, err := New(Options{HtpasswdFile: f}) // the same file, read again
	if err != nil {
		t.Fatal(err)
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("new"), bcrypt.MinCost)
	p2.users["bob"] = h // bob's password was changed
	d.Set(p2)
	// Were bcrypt asked, this hash would refuse alice's password.
	p2.users["alice"], _ = bcrypt.GenerateFromPassword([]byte("other"), bcrypt.MinCost)
	if !p2.checkPassword("alice", "wonderland") {
		t.Error("alice's password, verified before the reload, was checked with bcrypt again")
	}
	if p2.checkPassword("bob", "builder") {
		t.Error("bob's old password still verified after his hash changed")
	}
}

// A user's passwords are hashed one at a time: while one user's hashing
// is held (a flood of wrong passwords for it), another user's first login
// is not held with it.
func TestOneUsersFloodDoesNotHoldAnother(t *testing.T) {
	f := htpasswd(t, map[string]string{"alice": "wonderland", "heavy": "heavypw"})
	p, err := New(Options{HtpasswdFile: f})
	if err != nil {
		t.Fatal(err)
	}
	if userStripe("alice") == userStripe("heavy") {
		t.Fatal("test assumption: alice and heavy hash in different stripes")
	}
	stripe := &userStripes[userStripe("heavy")]
	stripe.Lock() // heavy's hashing is busy
	heavy := make(chan bool)
	go func() { heavy <- p.checkPassword("heavy", "wrong") }()
	if !p.checkPassword("alice", "wonderland") {
		t.Error("alice's password did not verify while heavy's hashing was held")
	}
	select {
	case <-heavy:
		t.Fatal("heavy's password was hashed while its stripe was held")
	case <-time.After(100 * time.Millisecond):
	}
	stripe.Unlock()
	if <-heavy {
		t.Error("a wrong password verified")
	}
}
