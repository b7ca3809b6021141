"""`backupctl keys generate|rotate`."""

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


@keys.command()
@click.option("--age/--no-age", "age", default=True, help="Rotate the age key pair (default: yes).")
@click.option("--signing/--no-signing", default=True, help="Rotate the signing key (default: yes).")
@json_option
@pass_app
def rotate(app: App, age: bool, signing: bool, as_json: bool) -> None:
    """New age recipient and/or signing key for new backups; old snapshots stay readable.

    The new identity is added to age-identity.txt (which keeps the old ones: restores of old
    snapshots work), age-recipient.txt holds only the new recipient, and the old signing key
    stays trusted for verifying old manifests. Store the identity file offline again.

    \b
    Examples:
      backupctl keys rotate
      backupctl keys rotate --no-signing --json
    """
    from backupctl.core.keyrotation import rotate_keys

    result = rotate_keys(app.settings.keys_dir, age=age, signing=signing)
    if as_json:
        print_json({
            "directory": str(result.directory), "old_recipient": result.old_recipient,
            "new_recipient": result.new_recipient, "old_signing_public_key": result.old_signing_public,
            "new_signing_public_key": result.new_signing_public, "changed": [str(p) for p in result.changed],
        })  # fmt: skip
        return
    lines: list[str] = []
    if result.new_recipient:
        lines += [
            f"age: new backups are encrypted to {result.new_recipient} (was {result.old_recipient};",
            "     policies naming an age1... key directly instead of the recipient file need the new one)",
            f"     {result.directory / 'age-identity.txt'} holds both identities: store it OFFLINE again",
        ]
    if result.new_signing_public:
        lines += [
            f"signing: new key {fingerprint(result.new_signing_public)}; the old one stays trusted here;",
            f"     hosts verifying these backups elsewhere: add {result.new_signing_public}",
            "     to the policy's signing.trusted_keys",
        ]
    click.echo("\n".join(lines))

COMMANDS = [keys]
