# mailcow-ldap-sync: files sysupgrade keeps (besides the changed conffile config.json).
# The state database, at the state_file of the shipped config (next to it). Without it the
# tool would adopt every mailbox by its tag again after an upgrade. Moved state_file, or put
# CA files here? Add those paths to /etc/sysupgrade.conf.
/etc/mailcow-ldap-sync/mailcow.sqlite3
