#!/usr/bin/env bash
# erlmcp-upgrade-guard EXE: the NixOS counterpart of `erlmcp upgrade apply`
# (nixos-modules/upgrade-guard.nix runs it as erlmcp-upgrade-guard.service;
# docs/nixos.md, "Upgrades").
#
# switch-to-configuration restarts this unit when the erlmcp package of the
# system changes (EXE, this configuration's erlmcp, is on its command line),
# and it starts at every boot. It waits for erlmcp's /status to say that
# this configuration's release is confirmed (its probation passed). When the
# service fails, crash-loops or the deadline passes first, it leaves the
# reason in the data directory's upgrade.json (what the previous release
# reports as its reason to run again) and switches the system back to the
# configuration that ran before (recorded by the pre-switch check), or else
# to the last one erlmcp was confirmed on: `switch-to-configuration test`, or
# `switch` after setting the system profile back when the profile points at
# the failed configuration. The previous release then takes the data back
# with the recorded down steps by itself.
#
# Crash-safe: what it is doing is kept in $STATE/pending.json (written before
# each step), so the instance that starts at the next boot, or the one the
# switch back starts, finishes the story. The verdict of each guarded switch
# is $STATE/last.json, with the fields of `erlmcp upgrade apply --json`.
#
# Environment (the module sets it; tests point it elsewhere):
#   ERLMCP_GUARD_OPS       erlmcp's operations listener, http://HOST:PORT
#   ERLMCP_GUARD_DATA      erlmcp's data directory (upgrade.json)
#   ERLMCP_GUARD_DEADLINE  seconds the new release has to be confirmed
#   ERLMCP_GUARD_UNIT      the erlmcp unit (erlmcp.service)
#   ERLMCP_GUARD_STATE     this guard's state directory
#   ERLMCP_GUARD_BEFORE    where the pre-switch check records the running system
#   ERLMCP_GUARD_SYSTEM    the running system link (/run/current-system)
#   ERLMCP_GUARD_PROFILE   the system profile (/nix/var/nix/profiles/system)
set -euo pipefail

exe=${1:?usage: erlmcp-upgrade-guard ERLMCP_EXE}
ops=${ERLMCP_GUARD_OPS:?}
data=${ERLMCP_GUARD_DATA:?}
deadline=${ERLMCP_GUARD_DEADLINE:-180}
unit=${ERLMCP_GUARD_UNIT:-erlmcp.service}
state=${ERLMCP_GUARD_STATE:-/var/lib/erlmcp-upgrade-guard}
before_file=${ERLMCP_GUARD_BEFORE:-/run/erlmcp-upgrade-guard/before}
current_link=${ERLMCP_GUARD_SYSTEM:-/run/current-system}
profile=${ERLMCP_GUARD_PROFILE:-/nix/var/nix/profiles/system}
# Restarts within one wait that make a crash loop (as `erlmcp upgrade apply`).
crash_loop=3

pending=$state/pending.json
last=$state/last.json
good=$state/good

say() { echo "erlmcp-upgrade-guard: $*"; }

release_of() { # erlmcp executable -> its release ("erlmcp 0.2.0" -> 0.2.0)
  "$1" --version 2>/dev/null | cut -d' ' -f2
}

# Writes stdin to $1 atomically and durably.
put() {
  local tmp=$1.tmp
  cat >"$tmp"
  sync "$tmp"
  mv -f "$tmp" "$1"
  sync "$(dirname "$1")"
}

status() { curl -sf --max-time 3 "$ops/status"; }
ready() { curl -sf --max-time 3 -o /dev/null "$ops/readyz"; }
restarts() { systemctl show --value --property=NRestarts "$unit" 2>/dev/null || echo 0; }

# Does erlmcp run release $1, healthy? "confirmed" (its probation passed,
# or it took the data back from a newer release) or nothing.
standing() {
  local s
  s=$(status) || return 0
  jq -r --arg r "$1" \
    'if .upgrade.release == $r and (.upgrade.state == "confirmed" or .upgrade.state == "rolled_back")
     then "confirmed" else empty end' <<<"$s"
}

# Waits until erlmcp runs release $1 confirmed and ready, at most $2
# seconds. Prints nothing on success, else why not (the phrases of `erlmcp
# upgrade apply`).
wait_for() {
  local release=$1 until=$(( $(date +%s) + $2 )) base n s
  base=$(restarts)
  while :; do
    if [[ $(standing "$release") == confirmed ]] && ready; then
      return 0
    fi
    n=$(restarts)
    if (( n < base )); then base=$n; fi
    if systemctl is-failed --quiet "$unit"; then
      echo "the service failed (systemd gave up restarting it)"
      return 0
    fi
    if (( n - base >= crash_loop )); then
      echo "a crash loop ($crash_loop restarts)"
      return 0
    fi
    if (( $(date +%s) >= until )); then
      if s=$(status) && jq -e --arg r "$release" '.upgrade.release == $r' <<<"$s" >/dev/null; then
        if ready; then
          echo "not confirmed (healthy long enough) before the deadline"
        else
          echo "not ready before the deadline"
        fi
      else
        echo "no answer from the daemon before the deadline"
      fi
      return 0
    fi
    sleep 1
  done
}

field() { jq -r --arg k "$1" '.[$k] // empty' "$pending"; }

# The verdict on a guarded switch: $STATE/last.json, and the journal.
verdict() { # outcome release from reason started
  local took=$(( $(date +%s) - $5 ))
  jq -n --arg o "$1" --arg r "$2" --arg f "$3" --arg why "$4" \
    --argjson started "$5" --argjson took "$took" --arg sys "$system" \
    '{outcome: $o, release: $r, from: $f, after_secs: $took, started: $started, system: $sys}
     + (if $why == "" then {} else {reason: $why} end)' | put "$last"
  case $1 in
    confirmed) say "$2 confirmed $took s after the switch (from $3)" ;;
    rolled_back) say "rolled back to $2 after $took s: $4" ;;
    *) say "$1: $2: $4" ;;
  esac
}

# Leaves the reason in upgrade.json for the release that runs next, as
# `erlmcp upgrade apply` does, owned as erlmcp owns it.
leave_reason() {
  local file=$data/upgrade.json owner mode
  [[ -f $file ]] || return 0
  jq -e '.state == "probation" or .state == "confirmed"' "$file" >/dev/null || return 0
  owner=$(stat -c %u:%g "$file")
  mode=$(stat -c %a "$file")
  jq --arg why "$1" '.rollback_reason = $why' "$file" >"$data/.upgrade.json.guard"
  chown "$owner" "$data/.upgrade.json.guard"
  chmod "$mode" "$data/.upgrade.json.guard"
  sync "$data/.upgrade.json.guard"
  mv -f "$data/.upgrade.json.guard" "$file"
  sync "$data"
}

# Switches the system to $1, the way nixos-rebuild runs it (in a unit of
# its own: the switch restarts this unit). When the system profile points at
# the configuration being left, the profile goes back too and the switch is
# a `switch` (the boot default follows); otherwise a `test`.
switch_to() {
  local target=$1 action=test link n prev
  if [[ $(readlink -f "$profile" 2>/dev/null) == "$system" ]] && command -v nix-env >/dev/null; then
    # The profile is a link to its generation's link, "system-42-link".
    link=$(readlink "$profile")
    n=${link%-link}
    n=${n##*-}
    prev=""
    if [[ $n =~ ^[0-9]+$ ]]; then
      prev=$(dirname "$profile")/$(basename "$profile")-$(( n - 1 ))-link
    fi
    if [[ -n $prev && -e $prev && $(readlink -f "$prev") == "$target" ]]; then
      nix-env -p "$profile" --rollback
    else
      nix-env -p "$profile" --set "$target"
    fi
    action=switch
  fi
  say "switching back: $target/bin/switch-to-configuration $action"
  systemd-run --unit=erlmcp-upgrade-rollback --collect --no-ask-password --service-type=exec \
    --wait -- "$target/bin/switch-to-configuration" "$action" ||
    say "switch-to-configuration $action exited with $? (some units did not start?)"
}

# Back in the configuration that was switched back to: wait for its release.
finish_rollback() {
  local from to why started
  from=$(field from); to=$(field to); why=$(field reason); started=$(field started)
  local failed
  failed=$(wait_for "$from" $(( deadline + 120 )))
  if [[ -z $failed ]]; then
    verdict rolled_back "$from" "$to" "$why" "$started"
    echo "$system" | put "$good"
    rm -f "$pending"
    exit 0
  fi
  verdict stuck "$from" "$to" "$why; then $from did not come back: $failed" "$started"
  say "$from did not come back after the rollback ($failed): see docs/operations/upgrades.md, \"A rollback that needs a person\""
  rm -f "$pending"
  exit 1
}

mkdir -p "$state"
system=$(readlink -f "$current_link")
release=$(release_of "$exe")
[[ -n $release ]] || { say "cannot run $exe --version"; exit 1; }
# The configuration that ran before this switch, if the pre-switch check
# recorded one (taken once: a later start is a boot or another switch).
before=""
if [[ -f $before_file ]]; then
  before=$(cat "$before_file")
  rm -f "$before_file"
fi

# What a previous instance left: an upgrade it was watching, or rolling back.
if [[ -f $pending ]]; then
  phase=$(field phase)
  candidate=$(field candidate)
  target=$(field target)
  if [[ $phase == rolling_back && $system == "$target" ]]; then
    say "finishing the rollback to $(field from) ($target)"
    finish_rollback
  elif [[ $system == "$candidate" && $phase == rolling_back ]]; then
    # The switch back did not happen (interrupted before it activated).
    say "the switch back to $target did not happen; again"
    switch_to "$target"
    finish_rollback
  elif [[ $system == "$candidate" ]]; then
    say "still watching $release on $system (restarted)"
  else
    # The configuration being watched no longer runs: the machine restarted
    # into another one, or it was switched away before the verdict.
    why="the system changed to $system before $(field to) was confirmed"
    if [[ $system == "$target" ]]; then
      verdict rolled_back "$(field from)" "$(field to)" "$why" "$(field started)"
    else
      verdict abandoned "$(field to)" "$(field from)" "$why" "$(field started)"
    fi
    rm -f "$pending"
  fi
fi

if [[ ! -f $pending ]]; then
  # A new configuration for erlmcp, or a boot. The configuration to go back
  # to: the one that ran before this switch (the pre-switch check), else
  # the last one erlmcp was confirmed on.
  target=$before
  if [[ -z $target || $target == "$system" ]] && [[ -f $good ]]; then
    target=$(cat "$good")
  fi
  if [[ -z $target || $target == "$system" || ! -x $target/bin/switch-to-configuration ]]; then
    # Nothing to go back to (the first boot, a boot of the same system):
    # record where erlmcp is confirmed.
    failed=$(wait_for "$release" "$deadline")
    if [[ -z $failed ]]; then
      echo "$system" | put "$good"
      say "$release confirmed on $system"
      exit 0
    fi
    say "$release failed: $failed; there is no configuration to switch back to"
    exit 1
  fi
  from=$(release_of "$target/sw/bin/erlmcp" || true)
  jq -n --arg c "$system" --arg t "$target" --arg f "${from:-unknown}" --arg to "$release" \
    --argjson started "$(date +%s)" \
    '{phase: "switched", candidate: $c, target: $t, from: $f, to: $to, started: $started}' | put "$pending"
  say "watching $release (from ${from:-unknown}): confirmed within $deadline s, or back to $target"
fi

failed=$(wait_for "$release" "$deadline")
if [[ -z $failed ]]; then
  verdict confirmed "$release" "$(field from)" "" "$(field started)"
  echo "$system" | put "$good"
  rm -f "$pending"
  exit 0
fi

why="$release failed: $failed"
say "rolling back: $why"
leave_reason "$why"
jq --arg why "$why" '.phase = "rolling_back" | .reason = $why' "$pending" | put "$pending"
target=$(field target)
switch_to "$target"
# Still here: the switch back did not restart this unit.
system=$(readlink -f "$current_link")
finish_rollback
