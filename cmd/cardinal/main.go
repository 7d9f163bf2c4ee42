// Command cardinal is the Cardinal remote-write gateway: it sits between
// Prometheus (or any remote-write sender) and a remote-write receiver and
// removes the labels that explode series cardinality.
//
//	cardinal serve --config.file=cardinal.yml [--web.listen-address=:9091] [--log.level=info]
//	cardinal check config cardinal.yml
//	cardinal demo
//	cardinal version
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
	"syscall"

	"github.com/cardinal-gateway/cardinal/demo"
	"github.com/cardinal-gateway/cardinal/server"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  cardinal serve --config.file=cardinal.yml [--web.listen-address=:9091] [--log.level=info]
  cardinal check config cardinal.yml
  cardinal demo [--workloads=N] [--scrapes=N]
  cardinal version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "check":
		if len(args) != 3 || args[1] != "config" {
			fmt.Fprint(stderr, usage)
			return 2
		}
		return checkConfig(args[2], stdout, stderr)
	case "demo":
		return runDemo(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "cardinal %s\n", buildVersion())
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n%s", args[0], usage)
	return 2
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config.file", "cardinal.yml", "configuration file")
	listen := fs.String("web.listen-address", ":9091", "address for the remote-write receiver, metrics and admin API")
	level := fs.String("log.level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "--log.level: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	srv, err := server.New(server.Options{ConfigFile: *configFile, ListenAddress: *listen, Logger: logger, SetMemoryLimit: true})
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

func checkConfig(path string, stdout, stderr io.Writer) int {
	cfg, err := server.Check(path)
	if err != nil {
		fmt.Fprintf(stderr, "FAILED: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK\n", path)
	fmt.Fprintf(stdout, "  downstream:          %s (timeout %s, %d retries)\n", cfg.Downstream.URL, cfg.Downstream.Timeout, cfg.Downstream.MaxRetries)
	fmt.Fprintf(stdout, "  max_request_bytes:   %d\n", cfg.Receive.MaxRequestBytes)
	fmt.Fprintf(stdout, "  relabel_configs:     %d rules\n", len(cfg.RelabelConfigs))
	admin := "disabled (no admin.bearer_token_file)"
	if cfg.Admin.BearerTokenFile != "" {
		admin = "token from " + cfg.Admin.BearerTokenFile
	}
	fmt.Fprintf(stdout, "  admin mutations:     %s\n", admin)
	return 0
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := demo.DefaultOptions()
	fs.IntVar(&opts.Workloads, "workloads", opts.Workloads, "mesh workloads to simulate")
	fs.IntVar(&opts.Scrapes, "scrapes", opts.Scrapes, "scrape rounds to send through the gateway")
	if err := fs.Parse(args); err != nil {
		return 2
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
