"""`backupctl keys generate`."""

from __future__ import annotations

from pathlib import Path

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.output import print_json
from backupctl.core.crypto import fingerprint, generate_keys
from backupctl.evidence.sshsig import allowed_signers_for


@click.group()
def keys() -> None:
    """Manage the age key pair and this host's signing key."""


@keys.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to write the keys (default: the keys dir, STATE_DIR/keys).",
)
@click.option(
    "--force", is_flag=True, help="Replace existing keys (old backups stay encrypted to the old key!)."
)
@json_option
@pass_app
def generate(app: App, directory: Path | None, force: bool, as_json: bool) -> None:
    """Create an age identity/recipient pair and an Ed25519 signing key (files 0600).

    Existing keys are kept unless --force. Prints what goes into policies and what must be
    stored offline.
    """
    result = generate_keys(directory or app.settings.keys_dir, force=force)
    if as_json:
        print_json(
            {
                "directory": str(result.directory),
                "recipient": result.recipient,
                "identity_file": str(result.identity_file),
                "signing_public_key": result.signing_public,
                "created": [str(p) for p in result.created],
            }
        )
        return
    state = "created" if result.created else "already present (kept)"
    click.echo(f"Keys in {result.directory}: {state}\n")
    click.echo("Put into each policy:")
    click.echo("  encryption:")
    click.echo("    recipients:")
    click.echo(f"      - {result.recipient}")
    click.echo(f"    identity: file:{result.identity_file}   # only where restores/drills run\n")
    click.echo("Store OFFLINE now (password manager, printed copy in a safe):")
    click.echo(f"  {result.identity_file}  -- without it no backup can be decrypted\n")
    click.echo(f"Manifest signing key fingerprint: {fingerprint(result.signing_public)}")
    click.echo(f"  public key (for signing.trusted_keys on other hosts): {result.signing_public}")
    click.echo(f"  allowed_signers line (evidence bundles): {allowed_signers_for(result.signing_public)}")


COMMANDS = [keys]
