// Command cardinal is the Cardinal remote-write gateway: it sits between
// Prometheus (or any remote-write sender) and a remote-write receiver and
// removes the labels that explode series cardinality.
//
//	cardinal serve --config.file=cardinal.yml [--web.listen-address=:9091] [--log.level=info]
//	               [--cluster.peers=HOST:PORT,... --cluster.self=HOST:PORT]
//	cardinal check config cardinal.yml
//	cardinal demo [--workloads=N] [--scrapes=N]
//	cardinal version | --version
//	cardinal help [COMMAND] | --help | COMMAND --help
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/cardinal-gateway/cardinal/cluster"
	"github.com/cardinal-gateway/cardinal/demo"
	"github.com/cardinal-gateway/cardinal/server"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = ""

// defaultGCPercent is the Go GC target of cardinal serve when GOGC is not
// set.
const defaultGCPercent = 50

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command is one subcommand: its one-line summary, its help text and what
// it runs. run returns the exit code: 0 success, 1 failure, 2 usage error.
type command struct {
	name, args, summary, help string
	run                       func(args []string, stdout, stderr io.Writer) int
}

var commands []command

func init() {
	commands = []command{
		{"serve", "[flags]", "run the gateway", `Runs the remote-write gateway: receives remote write on /api/v1/write, applies the
configuration's rules, caps and merging, and forwards to downstream.url. SIGTERM or
SIGINT shuts it down gracefully, SIGHUP or POST /-/reload reloads the configuration.`, serve},
		{"check", "config FILE", "validate a configuration and explain what it does", `Loads and compiles FILE exactly as serve would, prints the effective configuration
with its defaults and what each section will do, and warns about rules that are
probably mistakes. Exit 0 when serve would accept it, 1 otherwise.`, check},
		{"demo", "[flags]", "show the gateway working end to end, no external service", `Starts a real Cardinal server and a receiver on 127.0.0.1, sends it Istio, Envoy
and Linkerd traffic with injected request ids, trace ids, user agents and paths,
and prints what changed and whether every merged counter is exact.`, runDemo},
		{"version", "", "print the version", "Prints the version Cardinal was built from.", func(_ []string, stdout, _ io.Writer) int {
			fmt.Fprintf(stdout, "cardinal %s\n", buildVersion())
			return 0
		}},
		{"help", "[COMMAND]", "show help for a command", "Shows the commands, or the help of one.", help},
	}
}

const intro = `Cardinal is a Prometheus remote-write proxy that keeps metric cardinality under control:
it drops the labels that explode it, turns trace ids into exemplars, caps series per
workload and merges the series that collapse, so that totals stay right.
`

// writeUsage prints the commands.
func writeUsage(w io.Writer) {
	fmt.Fprint(w, intro)
	fmt.Fprintf(w, "\nusage: cardinal COMMAND [ARGS]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %-12s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintf(w, "\nflags:\n  --help, -h    show this help\n  --version     print the version\n\nRun 'cardinal help COMMAND' or 'cardinal COMMAND --help' for a command's flags.\n")
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// flagSet returns a FlagSet for a command; errors go to stderr, without
// the whole help (parseFlags adds a hint).
func flagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	return fs
}

// commandHelp prints a command's description and flags.
func commandHelp(fs *flag.FlagSet, w io.Writer) {
	c := lookup(fs.Name())
	fmt.Fprintf(w, "usage: cardinal %s %s\n\n%s\n", c.name, c.args, c.help)
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintf(w, "\nflags:\n")
			first = false
		}
		fmt.Fprintf(w, "  --%s=%s\n      %s\n", f.Name, f.DefValue, f.Usage)
	})
}

// parseFlags parses args; on --help (anywhere, also after the positional
// arguments) it prints the help to stdout and reports exit 0, on a bad flag
// the error, a hint and exit 2.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			commandHelp(fs, stdout)
			return 0, false
		}
		if a == "--" {
			break
		}
	}
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "run 'cardinal %s --help' for the flags\n", fs.Name())
		return 2, false
	}
	return 0, true
}

func help(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		writeUsage(stdout)
		return 0
	}
	c := lookup(args[0])
	if c == nil || len(args) > 1 {
		fmt.Fprintf(stderr, "cardinal help: unknown command %q\n\n", strings.Join(args, " "))
		writeUsage(stderr)
		return 2
	}
	return c.run([]string{"--help"}, stdout, stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		writeUsage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "-help":
		writeUsage(stdout)
		return 0
	case "--version", "-version":
		return lookup("version").run(nil, stdout, stderr)
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "cardinal: unknown command %q\n\n", args[0])
		writeUsage(stderr)
		return 2
	}
	return c.run(args[1:], stdout, stderr)
}

func serve(args []string, stdout, stderr io.Writer) int {
	fs := flagSet("serve", stderr)
	configFile := fs.String("config.file", "cardinal.yml", "configuration file")
	listen := fs.String("web.listen-address", ":9091", "address for the remote-write receiver, metrics and admin API")
	level := fs.String("log.level", "info", "log level: debug, info, warn, error")
	peers := fs.String("cluster.peers", "", "the replicas of a cluster, this one included: HOST:PORT,... or dns+NAME:PORT for every address of NAME (a headless Service); empty: no cluster. Each workload is owned by one replica, the others forward its series to it")
	self := fs.String("cluster.self", "", "this replica's HOST:PORT as --cluster.peers names it (in Kubernetes $(POD_IP):PORT)")
	refresh := fs.Duration("cluster.refresh-interval", cluster.DefaultRefreshInterval, "how often dns+ entries of --cluster.peers are resolved again")
	probe := fs.Duration("cluster.probe-interval", cluster.DefaultProbeInterval, "how often every other replica is probed (GET /-/ready)")
	peerTimeout := fs.Duration("cluster.peer-timeout", cluster.DefaultPeerTimeout, "how long a replica may fail its probes before its workloads move to the others; until then its share is answered 503")
	handover := fs.Duration("cluster.handover-delay", cluster.DefaultHandoverDelay, "how long the new owner of a workload that moved answers 503 for it, so that its old owner has stopped (at least twice --cluster.probe-interval)")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	var clusterCfg *cluster.Config
	switch {
	case *peers != "":
		clusterCfg = &cluster.Config{Peers: cluster.ParsePeers(*peers), Self: *self, RefreshInterval: *refresh, ProbeInterval: *probe, PeerTimeout: *peerTimeout, HandoverDelay: *handover}
		if err := clusterCfg.Validate(); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return 2
		}
	case *self != "":
		fmt.Fprintf(stderr, "--cluster.self needs --cluster.peers, the member list\n")
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cardinal serve: unexpected argument %q\nrun 'cardinal serve --help' for the flags\n", fs.Arg(0))
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "--log.level: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	if os.Getenv("GOGC") == "" {
		// Most of the heap is long-lived series state; letting garbage
		// grow to twice it (Go's default of 100) doubles the peak RSS a
		// sidecar is sized for. At 50 the peak is about a sixth lower for
		// about 5 % more CPU (bench/RESULTS.md).
		debug.SetGCPercent(defaultGCPercent)
	}

	srv, err := server.New(server.Options{ConfigFile: *configFile, ListenAddress: *listen, Logger: logger, SetMemoryLimit: true, Cluster: clusterCfg})
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			_ = srv.Reload() // logged by Reload
		}
	}()
	// A second SIGTERM or SIGINT during the graceful shutdown exits at once.
	go func() {
		<-ctx.Done()
		again := make(chan os.Signal, 1)
		signal.Notify(again, syscall.SIGTERM, syscall.SIGINT)
		<-again
		logger.Error("second signal during shutdown: exiting at once; requests in flight are not answered")
		os.Exit(1)
	}()
	logger.Info("starting cardinal", "version", buildVersion(), "config", *configFile)
	if err := srv.Run(ctx); err != nil {
		logger.Error("server stopped with an error", "err", err)
		return 1
	}
	logger.Info("stopped cleanly")
	return 0
}

func check(args []string, stdout, stderr io.Writer) int {
	fs := flagSet("check", stderr)
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 2 || fs.Arg(0) != "config" {
		fmt.Fprintf(stderr, "usage: cardinal check config FILE\nrun 'cardinal check --help' for more\n")
		return 2
	}
	return checkConfig(fs.Arg(1), stdout, stderr)
}

func checkConfig(path string, stdout, stderr io.Writer) int {
	compiled, err := server.Check(path)
	if err != nil {
		fmt.Fprintf(stderr, "FAILED: %v\n", err)
		return 1
	}
	effective, err := compiled.EffectiveYAML()
	if err != nil {
		fmt.Fprintf(stderr, "FAILED: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK\n\n# The effective configuration, every default filled in:\n%s\n# What it does:\n", path, effective)
	compiled.Explain(stdout)
	if warnings := compiled.Warnings(); len(warnings) > 0 {
		fmt.Fprintf(stdout, "\n# Warnings:\n")
		for _, w := range warnings {
			fmt.Fprintf(stdout, "WARNING: %s\n", w)
		}
	}
	return 0
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flagSet("demo", stderr)
	opts := demo.DefaultOptions()
	fs.IntVar(&opts.Workloads, "workloads", opts.Workloads, fmt.Sprintf("mesh workloads to simulate (1 to %d)", demo.MaxWorkloads))
	fs.IntVar(&opts.Scrapes, "scrapes", opts.Scrapes, fmt.Sprintf("scrape rounds to send through the gateway (1 to %d)", demo.MaxScrapes))
	serveAddr := fs.String("serve", "", "instead of the demo, serve its mesh traffic for a Prometheus to scrape on this address (host:port), one step further every scrape, until interrupted")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cardinal demo: unexpected argument %q\nrun 'cardinal demo --help' for the flags\n", fs.Arg(0))
		return 2
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintf(stderr, "cardinal demo: %v\nrun 'cardinal demo --help' for the flags\n", err)
		return 2
	}
	if *serveAddr != "" {
		exp, err := demo.NewExporter(opts)
		if err != nil {
			fmt.Fprintf(stderr, "cardinal demo: %v\n", err)
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if err := exp.Serve(ctx, *serveAddr, slog.New(slog.NewTextHandler(stderr, nil))); err != nil {
			fmt.Fprintf(stderr, "cardinal demo: %v\n", err)
			return 1
		}
		return 0
	}
	if err := demo.Run(context.Background(), opts, stdout); err != nil {
		if !errors.Is(err, context.Canceled) {
			fmt.Fprintf(stderr, "demo failed: %v\n", err)
		}
		return 1
	}
	return 0
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev := ""
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				rev = s.Value
			}
		}
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		if rev != "" {
			return "devel-" + rev[:min(12, len(rev))]
		}
	}
	return "devel"
}
