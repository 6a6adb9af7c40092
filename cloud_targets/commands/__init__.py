"""The web service commands: ``edgepack deploy -n NAME -m MODEL ...`` and ``edgepack service ...``.

``packager.cli`` imports them lazily (imports flow cloud_targets -> packager): ``deploy`` is the group in
:mod:`cloud_targets.cli`, ``service`` the group in :mod:`cloud_targets.commands.service`.
"""
