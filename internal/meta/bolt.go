package meta

import (
	"fmt"
	"runtime/debug"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// boltDB is the bbolt database whose transactions return an error, of
// category errdef.ErrDamaged, where bbolt panics on a page it cannot read,
// or the read of a mapped page faults (the file cut short, a read error of
// the card under it). Start-up reads only some pages: one damaged later,
// or never read until then, is found by whatever reads it first, often a
// background goroutine (eviction, access times, pre-staging) where a panic
// would end the process, and the restart would not see it. bbolt rolls
// the transaction back as the panic unwinds (db.Update and db.View defer
// it), so the database stays usable for the records that are intact.
type boltDB struct {
	*bolt.DB
	path string
	// damage is the first damage a transaction found (DB.Damaged): a
	// pointer, shared by the copies of this value.
	damage *atomic.Pointer[DamagedError]
}

// View runs fn in a read transaction.
func (b boltDB) View(fn func(*bolt.Tx) error) (err error) {
	defer b.recoverDamage("read", &err)
	// Per goroutine, and restored before recoverDamage runs.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return b.DB.View(fn)
}

// Update runs fn in a write transaction, as bolt.DB.Update does, except
// after a panic: bolt.DB.Update's rollback then reads the freelist page
// again, and where that page is what is damaged (or the file was cut
// short) it panics too and leaves bbolt's write lock held, so that every
// later write, and Close, waited for ever. Tx.Rollback only forgets the
// transaction's pages in memory.
func (b boltDB) Update(fn func(*bolt.Tx) error) (err error) {
	defer b.recoverDamage("write", &err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	tx, err := b.DB.Begin(true)
	if err != nil {
		return err
	}
	defer func() {
		if v := recover(); v != nil {
			tx.Rollback()
			panic(v)
		}
	}()
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func (b boltDB) recoverDamage(op string, err *error) {
	if v := recover(); v != nil {
		de := &DamagedError{Op: op + " metadata", Path: b.path, Cause: fmt.Sprint(v)}
		b.damage.CompareAndSwap(nil, de)
		*err = de
	}
}

// DamagedError is a meta.db that bbolt cannot read. It is errdef.ErrDamaged.
type DamagedError struct {
	Op    string // "open metadata", "read metadata", "write metadata"
	Path  string
	Cause string // what bbolt said (its panic), or the fault
}

// Error words it for the log and the command line: moved aside, the mirror
// starts with an empty database, keeps the stored blobs, and learns tags
// and links again from the upstream (docs/operations.md, "Corrupted
// storage").
func (e *DamagedError) Error() string {
	return fmt.Sprintf("%s %s: the database is damaged (%s): move it aside (mv %s %s.damaged) and start registry-edge again; stored content is kept, tags and links are learnt again from the upstream", e.Op, e.Path, e.Cause, e.Path, e.Path)
}

// Is makes it match errdef.ErrDamaged.
func (e *DamagedError) Is(target error) bool { return target == errdef.ErrDamaged }
