// Package access decides which device may read which repository through
// the mirror: anonymous reads (the default on a site LAN), users of an
// htpasswd file (bcrypt, as distribution and `htpasswd -B` write it), and
// client certificates (mTLS, verified by the TLS layer), with
// per-repository rules so that images pulled with private upstream
// credentials are not served to everyone.
package access

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"hash/fnv"
	"net/http"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/glob"
)

// Rule restricts repositories to some users and certificates.
type Rule struct {
	// Repositories are patterns (internal/glob) on the names the
	// repository goes by ("private/**", "ghcr.io/org/*"): '*' matches
	// within a segment, a "**" segment any number of segments.
	Repositories []string
	// Users are patterns of htpasswd user names allowed to read them.
	Users []string
	// Certs are patterns of client certificate common names allowed to
	// read them.
	Certs []string
}

// Options configures a Policy.
type Options struct {
	// Anonymous lets clients without credentials read repositories that
	// no rule restricts.
	Anonymous bool
	// HtpasswdFile holds user:bcrypt-hash lines; empty means no users.
	HtpasswdFile string
	// ChallengeBase answers the API base (/v2/) with a Basic challenge to
	// clients without credentials when there are users, also when
	// Anonymous allows them to read: Docker, podman, skopeo and buildah
	// send credentials only after a challenge on /v2/. Docker Engine cannot
	// answer a Basic challenge without a login, so its anonymous pulls
	// then fail (it would go to the registry itself).
	ChallengeBase bool
	// Rules are checked in order; the first whose Repositories match
	// decides.
	Rules []Rule
}

// Policy checks requests. It is safe for concurrent use.
type Policy struct {
	o     Options
	repos [][]glob.Glob     // the compiled Repositories of each rule
	users map[string][]byte // user -> bcrypt hash
	// dummy is a bcrypt hash as costly as the users' dearest: checking an
	// unknown user's password against it takes as long as a known one's.
	dummy []byte

	mu       sync.Mutex
	verified map[string][32]byte    // user -> sha256 of a password bcrypt accepted
	rejected map[[32]byte]time.Time // sha256 of user NUL password -> refused until
}

// New loads the htpasswd file and returns the policy.
func New(o Options) (*Policy, error) {
	p := &Policy{o: o, users: map[string][]byte{}, verified: map[string][32]byte{}, rejected: map[[32]byte]time.Time{}}
	for i, r := range o.Rules {
		var gs []glob.Glob
		for _, pat := range r.Repositories {
			g, err := glob.Compile(pat)
			if err != nil {
				return nil, fmt.Errorf("access.rules[%d].repositories: pattern %q: %w: %w", i, pat, err, errdef.ErrInvalid)
			}
			gs = append(gs, g)
		}
		p.repos = append(p.repos, gs)
		for _, pat := range append(append([]string{}, r.Users...), r.Certs...) {
			if _, err := path.Match(pat, ""); err != nil {
				return nil, fmt.Errorf("access.rules[%d]: pattern %q: %w", i, pat, errdef.ErrInvalid)
			}
		}
	}
	if o.HtpasswdFile != "" {
		b, err := os.ReadFile(o.HtpasswdFile)
		if err != nil {
			return nil, fmt.Errorf("access.htpasswd: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			user, hash, ok := strings.Cut(line, ":")
			if !ok || user == "" {
				return nil, fmt.Errorf("access.htpasswd %s line %d: want user:hash: %w", o.HtpasswdFile, n, errdef.ErrInvalid)
			}
			if _, err := bcrypt.Cost([]byte(hash)); err != nil {
				return nil, fmt.Errorf("access.htpasswd %s line %d (user %s): only bcrypt hashes are supported (htpasswd -B): %w", o.HtpasswdFile, n, user, errdef.ErrInvalid)
			}
			p.users[user] = []byte(hash)
		}
	}
	cost := bcrypt.MinCost
	for _, h := range p.users {
		if c, _ := bcrypt.Cost(h); c > cost {
			cost = c
		}
	}
	if len(p.users) > 0 {
		d, err := bcrypt.GenerateFromPassword([]byte("registry-edge: no such user"), cost)
		if err != nil {
			return nil, fmt.Errorf("access.htpasswd: %w", err)
		}
		p.dummy = d
	}
	return p, nil
}

// UnknownUsers names the users the rules list (by name, not by a pattern)
// that the htpasswd file does not have, each with its field path: a typo
// there locks the intended user out without a word.
func (p *Policy) UnknownUsers() []string {
	if p == nil {
		return nil // no access control configured
	}
	var out []string
	for i, r := range p.o.Rules {
		for _, u := range r.Users {
			if strings.ContainsAny(u, `*?[\`) {
				continue
			}
			if _, ok := p.users[u]; !ok {
				out = append(out, fmt.Sprintf("access.rules[%d].users: %q is not a user of the htpasswd file", i, u))
			}
		}
	}
	return out
}

// principal is who sent a request; user and cert empty means anonymous.
type principal struct {
	user     string
	cert     string // common name of a verified client certificate
	rejected string // user name of credentials that did not verify
}

func (pr principal) anonymous() bool { return pr.user == "" && pr.cert == "" }

// Client is who a request was let through as.
type Client struct {
	// User is the name of verified Basic credentials, Cert the common name
	// of a verified client certificate; both empty means anonymous.
	User, Cert string
	// RejectedUser is the user name of Basic credentials that did not
	// verify. If the request was let through, it read an open repository
	// as anonymous: a device whose credentials are stale, which its admin
	// wants to hear about (the access log says so).
	RejectedUser string
}

// identify authenticates r. Wrong credentials are an error (and the
// principal's rejected user); Check decides what it means.
func (p *Policy) identify(r *http.Request) (principal, error) {
	var pr principal
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		pr.cert = r.TLS.VerifiedChains[0][0].Subject.CommonName
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user == "" && pass == "" {
		// containers/image (podman, skopeo, buildah) answers a Basic
		// challenge without credentials with an empty pair ("Og==").
		return pr, nil
	}
	if !p.checkPassword(user, pass) {
		pr.rejected = user
		return pr, fmt.Errorf("invalid username or password: %w", errdef.ErrUnauthorized)
	}
	pr.user = user
	return pr, nil
}

// checkPassword verifies a password with bcrypt once, then against a
// remembered digest: bcrypt is slow on purpose, and every request of a
// pull carries the credentials. A pair that failed lately fails again
// without bcrypt: a device with stale credentials sends them with every
// request too (and may read open repositories all the same).
func (p *Policy) checkPassword(user, pass string) bool {
	sum := sha256.Sum256([]byte(pass))
	pair := sha256.Sum256([]byte(user + "\x00" + pass))
	hash, known := p.users[user]
	if ok, decided := p.remembered(user, known, sum, pair); decided {
		return ok
	}
	// The passwords of one user name are hashed one at a time: a flood of
	// wrong passwords for one user takes one hashing slot, not all of
	// them, and the other users' first logins do not queue behind it.
	stripe := &userStripes[userStripe(user)]
	stripe.Lock()
	defer stripe.Unlock()
	if ok, decided := p.remembered(user, known, sum, pair); decided {
		return ok // decided while this one waited
	}
	ok := false
	// At most half the processors hash at once: a flood of made-up
	// logins waits for its turn instead of taking every core from the
	// pulls (known clients do not hash again, see above).
	bcryptSlots <- struct{}{}
	if known {
		ok = bcrypt.CompareHashAndPassword(hash, []byte(pass)) == nil
	} else if p.dummy != nil {
		// Spend the time anyway, so user names cannot be probed by timing.
		bcrypt.CompareHashAndPassword(p.dummy, []byte(pass))
	}
	<-bcryptSlots
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		p.verified[user] = sum
		return true
	}
	if len(p.rejected) >= maxRejected {
		clear(p.rejected) // bounded: a flood of made-up pairs costs bcrypt again, not memory
	}
	p.rejected[pair] = time.Now().Add(rejectedTTL)
	return false
}

// remembered answers from what was decided before: a password bcrypt
// accepted for user (sum), or a user-password pair refused lately.
func (p *Policy) remembered(user string, known bool, sum, pair [32]byte) (ok, decided bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if good, seen := p.verified[user]; known && seen && subtle.ConstantTimeCompare(good[:], sum[:]) == 1 {
		return true, true
	}
	if until, failed := p.rejected[pair]; failed && time.Now().Before(until) {
		return false, true
	}
	return false, false
}

// userStripes serialize the hashing of one user name's passwords
// (userStripe picks a user's), in a bounded table: made-up names share
// stripes rather than grow it.
var userStripes [64]sync.Mutex

func userStripe(user string) int {
	h := fnv.New32a()
	h.Write([]byte(user))
	return int(h.Sum32() % uint32(len(userStripes)))
}

// bcryptSlots bounds the password hashes computed at once.
var bcryptSlots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2))

// Remembered failed pairs: how many, and for how long.
const (
	maxRejected = 4096
	rejectedTTL = time.Minute
)

// Check decides whether r may read repository repo, as the client named it
// ("" for the API base /v2/). names, if not nil, returns every name the
// repository goes by (repo first); it is called only when there are rules,
// and a rule applies if one of its patterns matches one of them. Check
// returns who the request came from, as far as it could tell, and nil, an
// error wrapping errdef.ErrUnauthorized (credentials missing or wrong:
// answer 401 with a Basic challenge), or one wrapping errdef.ErrDenied
// (authenticated, not allowed: 403).
func (p *Policy) Check(r *http.Request, repo string, names func() []string) (Client, error) {
	pr, err := p.check(r, repo, names)
	return Client{User: pr.user, Cert: pr.cert, RejectedUser: pr.rejected}, err
}

func (p *Policy) check(r *http.Request, repo string, names func() []string) (principal, error) {
	all := []string{repo}
	if repo != "" && names != nil && len(p.o.Rules) > 0 {
		all = names()
	}
	pr, credErr := p.identify(r)
	if credErr != nil {
		// Wrong credentials buy nothing, but they do not cost a device
		// what any anonymous one may read, nor what its verified client
		// certificate may: since /v2/ challenges, clients send the
		// credentials they hold, also stale ones. They still fail /v2/
		// (where a login checks them) and every repository that neither
		// anonymous clients nor the certificate may read.
		if repo == "" || pr.cert == "" && (!p.o.Anonymous || p.restricted(all)) {
			return pr, credErr
		}
	}
	if repo != "" {
		for i, rule := range p.o.Rules {
			if !p.matches(i, all) {
				continue
			}
			if (pr.user != "" && matchAny(rule.Users, pr.user)) || (pr.cert != "" && matchAny(rule.Certs, pr.cert)) {
				return pr, nil
			}
			if credErr != nil {
				return pr, credErr
			}
			if pr.anonymous() {
				return pr, fmt.Errorf("repository %s needs credentials: %w", repo, errdef.ErrUnauthorized)
			}
			return pr, fmt.Errorf("repository %s is not open to %s: %w", repo, pr, errdef.ErrDenied)
		}
	}
	if pr.anonymous() && !p.o.Anonymous {
		return pr, fmt.Errorf("credentials required: %w", errdef.ErrUnauthorized)
	}
	if repo == "" && pr.anonymous() && len(p.users) > 0 && p.o.ChallengeBase {
		// podman and skopeo send the credentials they have only after a
		// challenge on /v2/; without one they could never read a
		// repository a rule restricts. Clients without credentials go on
		// anonymously (containers/image with an empty pair), except
		// Docker Engine, which fails a Basic challenge without a login.
		return pr, fmt.Errorf("sign in to read restricted repositories: %w", errdef.ErrUnauthorized)
	}
	return pr, nil
}

// restricted reports whether a rule applies to the repository that goes by
// names.
func (p *Policy) restricted(names []string) bool {
	for i := range p.o.Rules {
		if p.matches(i, names) {
			return true
		}
	}
	return false
}

// matches reports whether one of rule i's repository patterns matches one
// of names.
func (p *Policy) matches(i int, names []string) bool {
	return slices.ContainsFunc(p.repos[i], func(g glob.Glob) bool { return slices.ContainsFunc(names, g.Match) })
}

func (pr principal) String() string {
	if pr.user != "" {
		return "user " + pr.user
	}
	return "certificate " + pr.cert
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}

// Dynamic is a policy that can be replaced while the mirror serves (a
// configuration reload); nil lets every request through.
type Dynamic struct{ p atomic.Pointer[Policy] }

// Set replaces the policy. Passwords the old policy verified stay verified
// for the users whose hash did not change: a reload (of the log level,
// say) must not make every device of the site hash again, behind any
// flood of wrong passwords.
func (d *Dynamic) Set(p *Policy) {
	if old := d.p.Load(); old != nil && p != nil && old != p {
		old.mu.Lock()
		kept := map[string][32]byte{}
		for user, sum := range old.verified {
			if h, ok := p.users[user]; ok && bytes.Equal(h, old.users[user]) {
				kept[user] = sum
			}
		}
		old.mu.Unlock()
		p.mu.Lock()
		for user, sum := range kept {
			if _, ok := p.verified[user]; !ok {
				p.verified[user] = sum
			}
		}
		p.mu.Unlock()
	}
	d.p.Store(p)
}

// Check applies the current policy.
func (d *Dynamic) Check(r *http.Request, repo string, names func() []string) (Client, error) {
	if p := d.p.Load(); p != nil {
		return p.Check(r, repo, names)
	}
	return Client{}, nil
}
