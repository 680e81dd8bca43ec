#!/usr/bin/env bash
# Give this node a persistent data directory for pmmc-ray at MOUNTPOINT, owned by OWNER.
#
#   mount-data-disk.sh MOUNTPOINT OWNER [auto | DEVICE | none]      (run as root)
#
# auto (the default) finds the node's data disk: one formatted earlier by this script
# (filesystem label "pmmc-data", found with blkid), else GCP's
# /dev/disk/by-id/google-pmmc-data, else the one whole disk that has no partition, no
# filesystem and no mount (the blank EBS volume of aws.yaml; the root disk always has
# partitions). More than one blank disk is an error: pass DEVICE instead. "none" only
# creates the directory, for machines whose own disk already survives `ray down`
# (local.yaml).
#
# A disk that already holds a filesystem is never formatted: after `ray down` / `ray up`
# the same disk comes back with its data. The mount goes into /etc/fstab (nofail), so a
# node that was stopped and started again mounts it at boot, before Ray starts (`ray up`
# may skip the setup commands on a restarted node whose config did not change).
set -euo pipefail

usage() {
  echo "usage: $0 MOUNTPOINT OWNER [auto|DEVICE|none]" >&2
  exit 2
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage
mnt=$1
owner=$2
dev=${3:-auto}
label=pmmc-data

if mountpoint -q "$mnt"; then
  chown "$owner" "$mnt"
  echo "pmmc-ray data: $mnt already mounted"
  exit 0
fi

if [ "$dev" = none ]; then
  install -d -o "$owner" -m 0750 "$mnt"
  echo "pmmc-ray data: $mnt is a directory on this machine's own disk"
  exit 0
fi

if [ "$dev" = auto ]; then
  if labelled=$(blkid -L "$label"); then
    dev=$labelled
  elif [ -e "/dev/disk/by-id/google-$label" ]; then
    dev=/dev/disk/by-id/google-$label
  else
    blank=()
    while read -r name type ro; do
      [ "$type" = disk ] && [ "$ro" = 0 ] || continue
      case $name in /dev/zram* | /dev/ram*) continue ;; esac # compressed-RAM swap etc.
      # a disk with partitions lists more than one line; one with a filesystem or a
      # mount shows it in FSTYPE / MOUNTPOINT
      [ "$(lsblk -no NAME "$name" | wc -l)" -eq 1 ] || continue
      [ -z "$(lsblk -dno FSTYPE,MOUNTPOINT "$name" | tr -d '[:space:]')" ] || continue
      blank+=("$name")
    done < <(lsblk -dpno NAME,TYPE,RO)
    if [ "${#blank[@]}" -ne 1 ]; then
      echo "pmmc-ray data: expected exactly one blank data disk, found ${#blank[@]}" \
        "(${blank[*]:-none}); attach one or pass its device" >&2
      exit 1
    fi
    dev=${blank[0]}
  fi
fi

[ -b "$dev" ] || { echo "pmmc-ray data: $dev is not a block device" >&2; exit 1; }
if [ -z "$(blkid -p -o value -s TYPE "$dev" || true)" ]; then
  echo "pmmc-ray data: formatting blank disk $dev"
  mkfs.ext4 -q -L "$label" "$dev"
fi
uuid=$(blkid -o value -s UUID "$dev")
[ -n "$uuid" ] || { echo "pmmc-ray data: no filesystem UUID on $dev" >&2; exit 1; }
install -d "$mnt"
if ! grep -q "^UUID=$uuid " /etc/fstab; then
  echo "UUID=$uuid $mnt ext4 defaults,nofail 0 2" >>/etc/fstab
fi
mount "$mnt"
chown "$owner" "$mnt"
chmod 0750 "$mnt"
echo "pmmc-ray data: $dev (UUID=$uuid) mounted at $mnt"
