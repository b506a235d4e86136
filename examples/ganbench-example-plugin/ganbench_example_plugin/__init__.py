"""An example ganbench plugin: the ``ragan`` loss, the ``resmlp`` architecture and the
``ganbench example-formula`` command. The hooks are in :mod:`ganbench_example_plugin.plugin`."""
