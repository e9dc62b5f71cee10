#!/usr/bin/env bash
# Builds the demo training set: the photographic wallpapers of Debian's
# plasma-workspace-wallpapers and mate-backgrounds packages (renders,
# illustrations and abstract art are left out), split into train/ and val/.
#
#   scripts/fetch-demo-photos.sh [OUT]      (default OUT: data/demo)
#
# Needs apt-get (package lists updated) and dpkg-deb; writes nothing outside
# OUT and a temporary folder. Every sixth photograph goes to val/.
set -euo pipefail
out=${1:-data/demo}
work=$(mktemp -d)
chmod a+rwx "$work" # apt downloads as its own user where it can
trap 'rm -rf "$work"' EXIT

(cd "$work" && apt-get download plasma-workspace-wallpapers mate-backgrounds >/dev/null) || {
    echo "apt-get download failed: run 'apt-get update' first" >&2
    exit 1
}
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done

# Photographs, chosen by looking at each one.
plasma="BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow FallenLeaf Grey Kite OneStandsOut Path summer_1am Volna"
mate="Aqua Blinds Dune FreshFlower Garden GreenMeadow LadyBird RainDrops Storm TwoWings Wood YellowFlower"

photos=()
for name in $plasma; do
    dir="$work/root/usr/share/wallpapers/$name/contents/images"
    # 1280x800 where offered (more of the picture per training crop), else
    # the smallest size there is.
    if [ -f "$dir/1280x800.jpg" ]; then
        photos+=("$name=$dir/1280x800.jpg")
    else
        photos+=("$name=$(ls -S "$dir"/* | tail -n 1)")
    fi
done
for name in $mate; do
    photos+=("$name=$work/root/usr/share/backgrounds/mate/nature/$name.jpg")
done

mkdir -p "$out/train" "$out/val"
i=0
for entry in "${photos[@]}"; do
    name=${entry%%=*}
    src=${entry#*=}
    [ -f "$src" ] || { echo "missing in the package: $src" >&2; exit 1; }
    split=train
    [ $((i % 6)) -eq 5 ] && split=val
    cp "$src" "$out/$split/$name.${src##*.}"
    i=$((i + 1))
done
echo "demo photographs in $out: $(ls "$out/train" | wc -l) train, $(ls "$out/val" | wc -l) validation"
