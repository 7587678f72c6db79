// Package logging builds the process's slog handler from configuration.
// Components never create loggers of their own: they take a *slog.Logger
// from their constructor. Limiter keeps an event a client repeats forever
// to one line per interval.
package logging

import (
	"io"
	"log/slog"
)

// New returns a logger writing to w at level, as JSON when json is set and
// as logfmt-style text otherwise.
func New(w io.Writer, level slog.Leveler, json bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Discard returns a logger that drops everything.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
