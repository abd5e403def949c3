"""``mount.cairn``: the drive in ``/etc/fstab`` (and ``mount -t cairn``).

mount(8) runs ``mount.cairn SPEC DIR [-sfnv] [-o OPTIONS]`` where SPEC is the first fstab
field; for Cairn it is the state directory (from ``cairn login --state``)::

    /var/lib/cairn/alice  /srv/nas/alice  cairn  allow_other,_netdev,nofail  0  0

It behaves as ``cairn mount DIR --state SPEC -o OPTIONS``: it returns once the drive is
mounted and the mount process runs in the background. ``-f`` (fake) only checks the
arguments; ``-n``, ``-s`` and ``-v`` are accepted and ignored. fstab-only options
(``_netdev``, ``nofail``, ``noauto``, ``user``, ``x-*`` ...) are dropped, ``allow_other``
and ``ro`` reach the FUSE session, anything else is refused with one line on stderr.
"""

from __future__ import annotations

import sys

from . import cli


def parse(argv: list[str]) -> tuple[list[str], bool]:
    """The equivalent ``cairn`` argv, and whether mount(8) asked for a fake mount."""
    positional: list[str] = []
    options: list[str] = []
    fake = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-o":
            if i + 1 >= len(argv):
                raise cli.UsageError("-o needs an argument")
            options.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("-o") and len(arg) > 2:
            options.append(arg[2:])
        elif arg == "-t":
            i += 1  # the type (cairn or fuse.cairn) says nothing new
        elif arg.startswith("-") and len(arg) > 1:
            if set(arg[1:]) - set("sfnv"):
                raise cli.UsageError(f"unknown flag {arg}")
            fake = fake or "f" in arg
        else:
            positional.append(arg)
        i += 1
    if len(positional) != 2:
        raise cli.UsageError("usage: mount.cairn STATE_DIR MOUNTPOINT [-o OPTIONS]")
    state, mountpoint = positional
    out = ["mount", mountpoint, "--state", state]
    opts = ",".join(o for o in options if o)
    if opts:
        out += ["-o", opts]
    return out, fake


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        cairn_argv, fake = parse(args)
    except cli.UsageError as e:
        print(f"mount.cairn: {e}", file=sys.stderr)
        return cli.EXIT_USAGE
    if fake:
        return 0
    return cli.main(cairn_argv)


if __name__ == "__main__":
    sys.exit(main())
