"""drill: the weekly restore drill of every source of one host's repository.

Runs ``backupd.actions.drill`` for each configured source of the host; a failed drill is
a warning of this job (and an alert of its own, raised by the drill), so one broken source
does not hide the verdicts of the others.
"""

from __future__ import annotations

from backupd.actions.context import Context
from backupd.actions.drill import drill_source
from backupd.errors import BackupdError, StoppedError
from jobs.base import MaintenanceEnv, MaintenanceResult


class DrillJob:
    name = "drill"
    per_repository = True

    def run(self, env: MaintenanceEnv) -> MaintenanceResult:
        assert env.host is not None
        ctx = Context.sharing(env.config, env.catalogue, env.borg)
        host = env.config.hosts[env.host]
        verdicts: list[str] = []
        problems: list[str] = []
        for source in host.sources.values():
            try:
                results = drill_source(ctx, host, source, "schedule")
            except StoppedError:
                raise  # a shutdown: the job is interrupted, not warned about
            except BackupdError as e:
                problems.append(f"{source.name}: {e}")
                continue
            verdicts += [f"{source.name}:{r.verdict}" for r in results]
            problems += [r.detail or r.archive for r in results if r.verdict == "fail"]
        summary = f"{len(verdicts)} drill(s): {', '.join(verdicts) or 'none'}"
        return MaintenanceResult(summary, tuple(problems))


JOB = DrillJob()
