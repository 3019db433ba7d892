#!/bin/sh
# Run by the packages feed's CI on the target after installing the package:
#   test.sh <package name> <version>   (the version without the release)
# The binary starts and prints its version, and `init` writes the example config, mode 0600.
# No `exit`: the status is that of the last command, whether run or sourced.
case "$1" in
mailcow-ldap-sync)
	mls_dir=$(mktemp -d) &&
		/usr/bin/mailcow-ldap-sync --version | grep -Fx "mailcow-ldap-sync $2" &&
		/usr/bin/mailcow-ldap-sync init -c "$mls_dir/config.json" >/dev/null 2>&1 &&
		[ "$(stat -c %a "$mls_dir/config.json")" = 600 ] &&
		cmp -s "$mls_dir/config.json" /etc/mailcow-ldap-sync/config.json
	mls_rc=$?
	rm -rf "$mls_dir"
	[ "$mls_rc" = 0 ]
	;;
esac
