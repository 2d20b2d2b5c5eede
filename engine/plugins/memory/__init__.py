"""The memory plugin: an aggregated table kept in the plugin process, queried over a UNIX socket."""
