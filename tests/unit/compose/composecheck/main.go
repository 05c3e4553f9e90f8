// composecheck loads a compose file with compose-go, the library Docker Compose itself uses: the
// compose-spec schema, interpolation from the project's .env, and the model's own consistency checks.
// It prints the resolved project as JSON for tests/unit/compose/test_compose.py.
//
//	go run . compose.yaml [KEY=VALUE ...]
//
// The process environment is ignored on purpose; only the .env file and the KEY=VALUE arguments count.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: composecheck COMPOSE_FILE [KEY=VALUE ...]")
		os.Exit(2)
	}
	file, err := filepath.Abs(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	opts, err := cli.NewProjectOptions(
		[]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithEnv(os.Args[2:]),
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
