package main

import (
	"github.com/spf13/cobra"
)

func newCompletionCommand(e *env) *cobra.Command {
	shells := []string{"bash", "zsh", "fish"}
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print the shell completion script for bash, zsh or fish",
		Long: `Print the shell completion script for bash, zsh or fish. It completes commands, flags,
and flag values: output formats, files, kubeconfig contexts, and the namespaces and
workloads of the --rules file given before them.

As a kubectl plugin (kubectl workerscale), kubectl 1.26 and later completes with an
executable named kubectl_complete-workerscale on the PATH that runs
` + "`kubectl workerscale __complete \"$@\"`" + `.`,
		Example: `workerscale completion bash > ~/.local/share/bash-completion/completions/workerscale
workerscale completion zsh > "${fpath[1]}/_workerscale"
workerscale completion fish > ~/.config/fish/completions/workerscale.fish
# As a kubectl plugin: completion of kubectl workerscale ...
printf '#!/bin/sh\nexec kubectl workerscale __complete "$@"\n' > ~/bin/kubectl_complete-workerscale
chmod +x ~/bin/kubectl_complete-workerscale`,
		ValidArgs: shells,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("name one shell: %s", orList(shells))
			}
			return cobra.OnlyValidArgs(c, args)
		},
		RunE: func(c *cobra.Command, args []string) error {
			root := c.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(e.stdout, true)
			case "zsh":
				return root.GenZshCompletion(e.stdout)
			}
			return root.GenFishCompletion(e.stdout, true)
		},
	}
}
