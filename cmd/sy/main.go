// Command sy is the command-line client of SyVault: it asks a SyVault server for dynamic
// database credentials and manages the targets they are made on. See package cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/syvault/syvault/cmd/sy/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
