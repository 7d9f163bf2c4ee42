// Package admin serves the admin HTTP API for per-workload series limits
// and the cardinality report, and keeps the limits set through it in a
// state file that survives restarts.
//
// How API overrides combine with the config file: the config's
// limits.overrides are the base; overrides set through the API win over
// them, are written to admin.state_file and are loaded again at start. A
// config reload replaces only the config's overrides; API overrides stay
// until they are deleted through the API, after which the config's override
// for that workload (or the default) applies again.
package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/cardinal-gateway/cardinal/limiter"
)

// Options configure the admin API.
type Options struct {
	Limiter *limiter.Limiter
	// StateFile returns the path of the state file in force ("" for none).
	StateFile func() string
	// RequireAdmin wraps the handlers of mutating calls with the bearer
	// token check.
	RequireAdmin func(http.HandlerFunc) http.HandlerFunc
	Logger       *slog.Logger
}

// maxBody bounds a PUT body: {"max_series": N} needs a few bytes.
const maxBody = 4 << 10

// Mount adds the limits and cardinality endpoints to r.
func Mount(r chi.Router, opts Options) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &api{opts: opts}
	r.Get("/api/v1/limits", a.getLimits)
	// A workload holds a "/" (namespace/app): it may come path-escaped
	// (payments%2Fcheckout) or not (payments/checkout), so the rest of the
	// path is the workload.
	r.Get("/api/v1/limits/*", a.getLimit)
	r.Put("/api/v1/limits/*", opts.RequireAdmin(a.putLimit))
	r.Delete("/api/v1/limits/*", opts.RequireAdmin(a.deleteLimit))
	r.Get("/api/v1/cardinality", a.getCardinality)
}

type api struct {
	opts Options
}

type limitsResponse struct {
	Default   int            `json:"default"`
	Overrides map[string]int `json:"overrides"`
}

func (a *api) getLimits(w http.ResponseWriter, _ *http.Request) {
	l := a.opts.Limiter
	WriteJSON(w, http.StatusOK, limitsResponse{Default: l.Settings().Default, Overrides: l.Overrides()})
}

type limitResponse struct {
	Workload  string `json:"workload"`
	MaxSeries int    `json:"max_series"`
	// Source says where the cap comes from: api, config or default.
	Source string `json:"source"`
}

func (a *api) getLimit(w http.ResponseWriter, r *http.Request) {
	workload, err := workloadParam(r)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	l := a.opts.Limiter
	source := "default"
	if _, ok := l.APIOverrides()[workload]; ok {
		source = "api"
	} else if _, ok := l.Settings().Overrides[workload]; ok {
		source = "config"
	}
	WriteJSON(w, http.StatusOK, limitResponse{Workload: workload, MaxSeries: l.Limit(workload), Source: source})
}

type putRequest struct {
	MaxSeries *int64 `json:"max_series"`
}

func (a *api) putLimit(w http.ResponseWriter, r *http.Request) {
	workload, err := workloadParam(r)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		WriteError(w, http.StatusBadRequest, "cannot read body: "+err.Error())
		return
	}
	if len(body) > maxBody {
		// 400, like every other malformed body: the input is wrong.
		WriteError(w, http.StatusBadRequest, fmt.Sprintf("body over %d bytes", maxBody))
		return
	}
	n, err := parseLimit(body)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := a.opts.Limiter.SetAPIOverride(workload, n, a.persist); err != nil {
		a.opts.Logger.Error("cannot persist limit override", "workload", workload, "err", err)
		WriteError(w, http.StatusInternalServerError, "cannot persist the override, nothing changed: "+err.Error())
		return
	}
	a.opts.Logger.Info("limit override set", "workload", workload, "max_series", n)
	WriteJSON(w, http.StatusOK, map[string]any{"workload": workload, "max_series": n})
}

// parseLimit reads {"max_series": N} strictly: one object, no unknown
// fields, N a non-negative integer (0 means unlimited).
func parseLimit(body []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req putRequest
	if err := dec.Decode(&req); err != nil {
		return 0, fmt.Errorf(`body must be {"max_series": N}: %s`, jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return 0, errors.New("body holds more than one JSON value")
	}
	if req.MaxSeries == nil {
		return 0, errors.New(`"max_series" is required`)
	}
	n := *req.MaxSeries
	if n < 0 {
		return 0, fmt.Errorf("max_series must not be negative, got %d", n)
	}
	if n > 1<<31-1 {
		return 0, fmt.Errorf("max_series %d is too large", n)
	}
	return int(n), nil
}

func (a *api) deleteLimit(w http.ResponseWriter, r *http.Request) {
	workload, err := workloadParam(r)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	found, err := a.opts.Limiter.DeleteAPIOverride(workload, a.persist)
	switch {
	case err != nil:
		WriteError(w, http.StatusInternalServerError, "cannot persist the change, nothing changed: "+err.Error())
	case !found:
		WriteError(w, http.StatusNotFound, fmt.Sprintf("no override set through the API for workload %q", workload))
	default:
		a.opts.Logger.Info("limit override deleted", "workload", workload)
		w.WriteHeader(http.StatusNoContent)
	}
}

func (a *api) getCardinality(w http.ResponseWriter, r *http.Request) {
	top, err := TopParam(r)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	WriteJSON(w, http.StatusOK, a.opts.Limiter.Cardinality(top))
}

func (a *api) persist(overrides map[string]int) error {
	path := ""
	if a.opts.StateFile != nil {
		path = a.opts.StateFile()
	}
	if path == "" {
		return nil
	}
	return SaveState(path, overrides)
}

// jsonProblem describes a decoding error in the API's terms, without the
// Go types encoding/json names.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return fmt.Sprintf("got a JSON %s, want an object", typeErr.Value)
		}
		return fmt.Sprintf("%s must be a non-negative integer, got a JSON %s", field, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("invalid JSON at byte %d", syntaxErr.Offset)
	case errors.Is(err, io.EOF):
		return "the body is empty"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends early"
	}
	// json: unknown field "x", and the like, name no Go type.
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: "); ok {
		return rest
	}
	return msg
}

func workloadParam(r *http.Request) (string, error) {
	w := chi.URLParam(r, "*")
	// chi routes on RawPath when the request path had escapes (such as the
	// %2F of "ns%2Fapp"); only then is the parameter still escaped.
	if r.URL.RawPath != "" {
		var err error
		if w, err = url.PathUnescape(w); err != nil {
			return "", fmt.Errorf("workload %q is not path-escaped correctly: %w", w, err)
		}
	}
	if w == "" {
		return "", errors.New("workload is empty")
	}
	return w, nil
}

// TopParam reads ?top=N (default 20, from 1 to 10000).
func TopParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("top")
	if v == "" {
		return 20, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > 10000 {
		return 0, fmt.Errorf("top must be an integer from 1 to 10000, not %q", v)
	}
	return n, nil
}

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes {"error": msg} with status.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}

// state is the state file's content.
type state struct {
	Version   int            `json:"version"`
	Overrides map[string]int `json:"overrides"`
}

// LoadState reads the overrides from the state file; a missing file means
// none.
func LoadState(path string) (map[string]int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]int{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read state file: %w", err)
	}
	var st state
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("cannot parse state file %s: %w", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("cannot parse state file %s: data after the JSON object", path)
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("state file %s: unknown version %d", path, st.Version)
	}
	for w, n := range st.Overrides {
		if n < 0 {
			return nil, fmt.Errorf("state file %s: negative limit for %q", path, w)
		}
	}
	if st.Overrides == nil {
		st.Overrides = map[string]int{}
	}
	return st.Overrides, nil
}

// SaveState writes the overrides atomically: a temporary file in the same
// directory, fsync, rename over the old file, fsync of the directory. A
// crash leaves either the old or the new file, never a torn one.
func SaveState(path string, overrides map[string]int) error {
	b, err := json.MarshalIndent(state{Version: 1, Overrides: overrides}, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cannot create state file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("cannot write state file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("cannot sync state file: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot replace state file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
