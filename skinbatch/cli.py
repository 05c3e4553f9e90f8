"""The ``skinbatch`` command.

Sub-commands are imported lazily so that a consumer host, which has neither torch nor the converter's
dependencies, can still run ``skinbatch consume`` and ``skinbatch --help``.

This is also the one place where errors become exit codes: a sub-command raises a
:class:`~skinbatch.contract.SkinbatchError` and the group prints its message (no traceback) and exits
with the error's own ``exit_code``. Sub-commands never map error types to codes themselves; they only
return a code they compute from a result (a run with failures exits 3, an interrupted one 130).
"""

from __future__ import annotations

import importlib
import sys

import click

from skinbatch.contract import SkinbatchError

# name -> "module:attribute", loaded only when the command runs.
_COMMANDS: dict[str, tuple[str, str]] = {
    "taxonomy": ("skinbatch.taxonomy.cli:taxonomy", "Partition and inspect disease taxonomies."),
    "convert": ("skinbatch.converter.cli:convert", "Convert a trained Inception-v3 into a Triton model repository."),
    "serve": ("skinbatch.serve.cli:serve", "Run the local CPU Triton server on a model repository."),
    "consume": ("skinbatch.consumer.cli:consume", "Score images streamed through Kafka."),
    "publish": ("skinbatch.consumer.publish:publish", "Send image files to Kafka as scoring requests."),
    "demo": ("skinbatch.demo:demo", "Run the whole pipeline on a local stack with sample images."),
    "localstack": ("skinbatch.localstack.cli:localstack", "Local Kafka broker for the demo and tests."),
    "triage": ("skinbatch.triage.cli:triage", "Score folders of photos and DICOM into a ranked report."),
    "status": ("skinbatch.status.cli:status", "Health, batching and lag of Triton and the consumer group."),
    "evaluate": ("skinbatch.evaluate.cli:evaluate", "ROC/AUC, accuracy and confusion matrices on a labelled set."),
}


def report_error(exc: SkinbatchError, command: str) -> int:
    """Print ``exc`` as ``skinbatch COMMAND: message`` on stderr and return its exit code."""
    click.echo(f"skinbatch {command}: {exc}", err=True)
    return int(exc.exit_code)


def run_standalone(command: click.Command) -> None:
    """Run one sub-command as its own program (``python -m skinbatch.consumer.cli``), ending on a
    :class:`SkinbatchError` exactly as ``skinbatch COMMAND`` does."""
    try:
        command.main()
    except SkinbatchError as exc:
        sys.exit(report_error(exc, command.name or "?"))


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        target, help_text = _COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)

            @click.command(cmd_name, help=help_text, context_settings={"ignore_unknown_options": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def unavailable(args: tuple[str, ...]) -> None:
                raise click.ClickException(
                    f"`skinbatch {cmd_name}` needs a package that is not installed ({missing}). "
                    "Install the matching extra, e.g. `pip install 'skinbatch[convert]'` for convert, "
                    "`pip install 'skinbatch[serve]'` for serve."
                )

            return unavailable
        return getattr(module, attr)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SkinbatchError as exc:
            raise click.exceptions.Exit(report_error(exc, ctx.invoked_subcommand or "?")) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import every sub-command (torch would load for `--help`).
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="skinbatch")
def cli() -> None:
    """Score dermatology photographs for skin cancer with an Inception-v3 served by Triton."""


def main() -> None:
    sys.exit(cli(standalone_mode=True))


if __name__ == "__main__":
    main()
