#!/usr/bin/env bash
# Install the built app (dist/Riffwright from packaging/build) for this user, or system-wide:
#   packaging/linux/install.sh                  -> ~/.local (no root needed)
#   sudo packaging/linux/install.sh /usr/local  -> every user
#   packaging/linux/install.sh --uninstall [PREFIX]
# Puts the app folder in PREFIX/lib/riffwright, a `riffwright` link in PREFIX/bin, the desktop
# entry, the AppStream metadata and the icons (hicolor 16..512) under PREFIX/share.
# The app plays audio through the system's PortAudio (Debian/Ubuntu: libportaudio2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ID=app.riffwright.Riffwright
uninstall=0
[ "${1:-}" = "--uninstall" ] && { uninstall=1; shift; }
PREFIX=${1:-$HOME/.local}
share="$PREFIX/share"

if [ "$uninstall" = 1 ]; then
  rm -rf "$PREFIX/lib/riffwright" "$PREFIX/bin/riffwright" "$share/applications/$ID.desktop" \
    "$share/metainfo/$ID.metainfo.xml"
  rm -f "$share"/icons/hicolor/*/apps/$ID.png "$share/icons/hicolor/scalable/apps/$ID.svg"
  echo "removed Riffwright from $PREFIX (your models and sessions in ~/.local/share/riffwright stay)"
  exit 0
fi

src="$root/dist/Riffwright"
[ -x "$src/Riffwright" ] || { echo "install.sh: build first: packaging/build" >&2; exit 1; }
mkdir -p "$PREFIX/lib" "$PREFIX/bin" "$share/applications" "$share/metainfo"
rm -rf "$PREFIX/lib/riffwright.new"
cp -a "$src" "$PREFIX/lib/riffwright.new"
rm -rf "$PREFIX/lib/riffwright"
mv "$PREFIX/lib/riffwright.new" "$PREFIX/lib/riffwright"
ln -sfn "$PREFIX/lib/riffwright/Riffwright" "$PREFIX/bin/riffwright"
# absolute Exec/TryExec: ~/.local/bin is not on every desktop session's PATH
sed -e "s|^Exec=riffwright|Exec=$PREFIX/lib/riffwright/Riffwright|" \
    -e "s|^TryExec=riffwright|TryExec=$PREFIX/lib/riffwright/Riffwright|" \
    "$here/$ID.desktop" > "$share/applications/$ID.desktop"
cp "$here/$ID.metainfo.xml" "$share/metainfo/"
icons="$root/resources/icons/app"
for s in 16 24 32 48 64 128 256 512; do
  install -D -m 644 "$icons/riffwright-$s.png" "$share/icons/hicolor/${s}x${s}/apps/$ID.png"
done
install -D -m 644 "$icons/riffwright.svg" "$share/icons/hicolor/scalable/apps/$ID.svg"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$share/applications" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$share/icons/hicolor" || true
echo "installed Riffwright in $PREFIX/lib/riffwright; run \`riffwright\` or find it in your app menu"
