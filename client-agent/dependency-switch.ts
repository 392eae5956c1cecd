import { readdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { ArtifactName, Version } from '../schemas/common.ts'
import type { ArtifactManifest } from '../schemas/manifest.ts'
import type { AgentConfig } from './config.ts'
import { fileHasBytes } from './download.ts'
import { AgentError } from './errors.ts'
import { artifactOfFolder } from './fs/artifact-folder.ts'
import { type LockSet, type LockWait, withOrderedLocks } from './fs/artifact-lock.ts'
import { fsyncDir, writeFileAtomic } from './fs/atomic.ts'
import { unlessMissing } from './fs/missing.ts'
import { maintainerTrustsOnDisk } from './root-trust.ts'
import { ArtifactStore } from './store.ts'
import { distrustedSigners, type MaintainerTrust, signatureShortfall } from './trust.ts'

/**
 * A version downloaded, verified and committed to its store (versions/<v>), not yet current: it is
 * switched to together with the rest of an update, or not at all.
 */
export interface StagedSwitch {
  store: ArtifactStore
  manifest: ArtifactManifest
  /** What was current when it was staged: it is switched only if that is still current. */
  from: string | null
  /**
   * This update committed the version (downloaded it, or took the daemon's prefetched copy); false when
   * it found it already on disk, maybe staged by another update under way (discardNeverInstalled).
   */
  downloaded: boolean
  /** Makes it current (store.activate with the trust it was verified under). */
  activate(): Promise<void>
  /** After every switch: telemetry and pruning, best effort (the switch already stands). */
  settle(): Promise<void>
}

/**
 * The dependency versions an update staged, in the order they are switched (a dependency before the
 * artifacts that need it). Resolution reads it as the device-to-be: a dependency staged for one
 * artifact is what a later one's range is checked against, and a staged artifact's ranges bind its
 * dependencies as if it were current (dependencies.ts).
 */
export class SwitchPlan {
  private readonly staged = new Map<string, StagedSwitch>()

  /** Stages `step`; one staged earlier for the same artifact is replaced (moved to the end). */
  add(step: StagedSwitch): void {
    this.staged.delete(step.store.name)
    this.staged.set(step.store.name, step)
  }

  /** Forgets what was staged for `name` (its current version turned out to be the one needed). */
  drop(name: string): void {
    this.staged.delete(name)
  }

  staging(name: string): ArtifactManifest | undefined {
    return this.staged.get(name)?.manifest
  }

  get steps(): StagedSwitch[] {
    return [...this.staged.values()]
  }
}

/** The switches of an update under way, written before the first and removed after the last. */
const Journal = z.object({
  steps: z
    .array(z.object({ name: ArtifactName, from: Version.nullable(), to: Version }))
    .min(1)
    .max(1024),
})
type Journal = z.infer<typeof Journal>

const JOURNAL_FILE = 'switching.json'

/**
 * Switches every dependency `plan` staged, then `last` (the artifact the update is for; null when it
 * was current already), so the device never runs the new libraries under the old app. The caller holds
 * `topStore`'s lock; the dependencies' locks are taken here in folder order, into the update's LockSet
 * (`wait.locks`), which mostly holds them already from staging (fs/artifact-lock.ts: one order for
 * every lock, so two updates never wait on each other), and each must still have the version current
 * it had when it was staged, else nothing is switched (`busy`). A failure part-way switches
 * back the dependencies already switched. A journal in `topStore` names the switches while they run:
 * a crash part-way leaves it, and finishInterruptedSwitch completes them on the next install.
 */
export async function switchTogether(
  topStore: ArtifactStore,
  plan: SwitchPlan,
  last: StagedSwitch | null,
  wait: LockWait,
): Promise<void> {
  const dependencies = plan.steps.filter((step) => step.store.name !== topStore.name)
  if (dependencies.length === 0) {
    await last?.activate()
    await last?.settle()
    return
  }
  await withLocks(
    dependencies.map((step) => step.store),
    wait,
    async () => {
      for (const step of dependencies) await assertUnchanged(step, topStore.name)
      const steps = last ? [...dependencies, last] : dependencies
      const journal: Journal = {
        steps: steps.map((s) => ({ name: s.store.name, from: s.from, to: s.manifest.version })),
      }
      await writeFileAtomic(journalPath(topStore), JSON.stringify(journal))
      const switched: StagedSwitch[] = []
      try {
        for (const step of steps) {
          await step.activate()
          switched.push(step)
        }
      } catch (error) {
        await switchBack(switched.filter((s) => s !== last))
        await removeJournal(topStore)
        throw error
      }
      await removeJournal(topStore)
      for (const step of steps) await step.settle().catch(() => undefined)
    },
  )
}

/**
 * Completes the switches a crashed update left half done (its journal in `topStore`, whose lock the
 * caller holds). Every version was verified and committed before the first switch, so finishing is
 * only moving links and needs no network; but a crash can be followed by anything before the restart
 * (a disk rotting under versions/, a root revoking the key that signed them), so each version still to
 * be switched to is checked again as a rollback checks the version it returns to: its blob re-hashed
 * against its stored signed manifest, and that manifest vouched for by the keys the device trusts now,
 * on disk (it runs before the root is refreshed, and offline). One that fails drops the switch: the
 * switches already made are put back to the versions they left, so the set runs as before the update,
 * the journal goes, and the failure is thrown (`integrity-mismatch` or `untrusted-manifest`, naming
 * it). Abandoned silently instead when an artifact in it has since been changed by someone else (its
 * current version is neither the one before nor the one after) or the staged version is gone: the
 * owner's later change wins. Returns the artifacts it switched.
 */
export async function finishInterruptedSwitch(
  config: AgentConfig,
  topStore: ArtifactStore,
  wait: LockWait,
): Promise<string[]> {
  const text = await unlessMissing(readFile(journalPath(topStore), 'utf8'), null)
  if (text === null) return []
  const parsed = Journal.safeParse(parseJson(text))
  if (!parsed.success) {
    await removeJournal(topStore)
    return []
  }
  const steps = parsed.data.steps.map((step) => ({
    ...step,
    store: step.name === topStore.name ? topStore : new ArtifactStore(config.installRoot, step.name),
  }))
  const others = steps.filter((step) => step.store !== topStore).map((step) => step.store)
  return withLocks(others, wait, async () => {
    const pending: typeof steps = []
    for (const step of steps) {
      const { current } = await step.store.state()
      if (current === step.to) continue
      if (current !== step.from || (await step.store.manifestOrNull(step.to)) === null) {
        await removeJournal(topStore)
        return []
      }
      pending.push(step)
    }
    const trusts = await maintainerTrustsOnDisk(config)
    for (const step of pending) {
      const problem = await keptVersionProblem(step.store, step.to, trusts)
      if (problem === null) continue
      const putBack = await putBackSwitched(steps.filter((s) => !pending.includes(s)))
      await removeJournal(topStore)
      throw notFinished(topStore.name, step, problem, putBack)
    }
    for (const step of pending) await step.store.activate((await step.store.manifestOf(step.to)).signed)
    await removeJournal(topStore)
    return pending.map((step) => step.name)
  })
}

/** Why a version kept on disk must not be switched to now, or null when it may. */
interface KeptVersionProblem {
  code: 'integrity-mismatch' | 'untrusted-manifest'
  why: string
  revokedKeys?: string[]
}

/**
 * The checks `rollback` makes of the version it returns to (install.ts assertStillVouchedFor and its
 * re-hash): enough signatures by keys trusted now (`trusts`: maintainerTrustsOnDisk), and the bytes
 * its signed manifest names.
 */
async function keptVersionProblem(
  store: ArtifactStore,
  version: string,
  trusts: readonly MaintainerTrust[],
): Promise<KeptVersionProblem | null> {
  const envelope = await store.manifestOf(version)
  const verdict = await distrustedSigners(envelope, trusts)
  if (!verdict.met) {
    const by =
      verdict.untrusted.length > 0
        ? ` (signed by ${verdict.untrusted.join(', ')}, no longer trusted: revoked by a newer root or dropped from the config)`
        : ''
    return {
      code: 'untrusted-manifest',
      why: `has ${signatureShortfall(verdict.threshold)} now${by}`,
      revokedKeys: verdict.untrusted,
    }
  }
  if (!(await fileHasBytes(store.blobPath(version), envelope.signed)))
    return { code: 'integrity-mismatch', why: 'no longer has the bytes its signed manifest names' }
  return null
}

/**
 * Puts the journal's switches already made back to the version each left (kept installed: the store's
 * previous), newest first; one that had none stays (nothing ran it). Returns what was put back and
 * what could not be (its version before is gone or its link cannot be moved).
 */
async function putBackSwitched(
  switched: ReadonlyArray<{ name: string; from: string | null; to: string; store: ArtifactStore }>,
): Promise<{ putBack: string[]; stayed: string[] }> {
  const result = { putBack: [] as string[], stayed: [] as string[] }
  for (const step of [...switched].reverse()) {
    if (step.from === null) continue
    const from = step.from
    const done = await step.store
      .manifestOf(from)
      .then((envelope) => step.store.activate(envelope.signed))
      .then(
        () => true,
        () => false,
      )
    ;(done ? result.putBack : result.stayed).push(`${step.name} ${step.to} → ${from}`)
  }
  return result
}

/** The error of a journal dropped because `step`'s version failed its check. */
function notFinished(
  top: string,
  step: { name: string; from: string | null; to: string },
  problem: KeptVersionProblem,
  { putBack, stayed }: { putBack: string[]; stayed: string[] },
): AgentError {
  const back = putBack.length > 0 ? `; the switches it had made were put back (${putBack.join(', ')})` : ''
  const left =
    stayed.length > 0
      ? `; these could not be put back and still run the new version: ${stayed.join(', ')}`
      : ''
  return new AgentError(
    problem.code,
    `an update of ${top} killed while switching was not finished: ${step.name}@${step.to} on disk ${problem.why}${back}${left}; ${step.name} stays on ${step.from ?? 'nothing'} and nothing else was done. Run \`deltaport update ${top}\` to download and verify the update again`,
    {
      artifact: top,
      name: step.name,
      version: step.to,
      putBack,
      ...(stayed.length > 0 ? { notPutBack: stayed } : {}),
      ...(problem.revokedKeys ? { revokedKeys: problem.revokedKeys } : {}),
    },
  )
}

/** An update's switches a kill left half done: the artifact whose journal names them, and the switches. */
export interface InterruptedSwitch {
  artifact: string
  steps: Array<{ name: string; from: string | null; to: string }>
}

/**
 * The interrupted switches (journals) that name `name`: its own, and those of updates that staged it as
 * a dependency (their journals live in the dependent's folder). A journal that cannot be parsed names
 * nothing (finishInterruptedSwitch drops it). Reads only.
 */
export async function interruptedSwitchesNaming(
  installRoot: string,
  name: string,
): Promise<InterruptedSwitch[]> {
  const found: InterruptedSwitch[] = []
  for (const entry of await unlessMissing(readdir(installRoot, { withFileTypes: true }), [])) {
    const artifact = entry.isDirectory() ? artifactOfFolder(entry.name) : null
    if (artifact === null) continue
    const text = await unlessMissing(readFile(join(installRoot, entry.name, JOURNAL_FILE), 'utf8'), null)
    const parsed = text === null ? null : Journal.safeParse(parseJson(text))
    if (!parsed?.success) continue
    if (artifact === name || parsed.data.steps.some((step) => step.name === name))
      found.push({ artifact, steps: parsed.data.steps })
  }
  return found
}

/**
 * Finishes every interrupted switch that names `name` (finishInterruptedSwitch, each under its
 * artifact's lock and those of the others it names, taken in one order: withOrderedLocks), so a
 * command about to act on `name` (rollback, uninstall) acts on a set switched as a whole, as install
 * does. Like a redo log: the switches were
 * begun with every version verified and committed, so they are completed rather than undone; a
 * rollback afterwards undoes the finished update the way it undoes any other. Returns the artifacts
 * it switched.
 */
export async function finishSwitchesNaming(
  config: AgentConfig,
  name: string,
  wait: LockWait,
): Promise<string[]> {
  const switched: string[] = []
  for (const { artifact, steps } of await interruptedSwitchesNaming(config.installRoot, name)) {
    const top = new ArtifactStore(config.installRoot, artifact)
    const dirs = [top.dir, ...steps.map((step) => new ArtifactStore(config.installRoot, step.name).dir)]
    switched.push(
      ...(await withOrderedLocks(dirs, wait, (locks) => {
        const held = { ...wait, locks }
        return top.withLock(held, () => finishInterruptedSwitch(config, top, held))
      })),
    )
  }
  return switched
}

/**
 * The switches of updates killed part-way that name `name` (dependency-switch.ts), each with what every
 * artifact in it runs now, for `status`: until they are finished the set is half switched (new
 * libraries under the old app, say), and the owner should know, and how to finish it.
 */
export async function unfinishedSwitches(installRoot: string, name: string) {
  const found = await interruptedSwitchesNaming(installRoot, name)
  const described = await Promise.all(
    found.map(async ({ artifact, steps }) => {
      const now = await Promise.all(
        steps.map(async (step) => ({
          ...step,
          current: (await new ArtifactStore(installRoot, step.name).state()).current,
        })),
      )
      // One of them runs neither version (changed, or uninstalled, since): finishing drops this journal.
      if (now.some((s) => s.current !== s.to && s.current !== s.from)) return null
      const switches = now
        .map(
          (s) =>
            `${s.name} ${s.from ?? 'none'} → ${s.to} (${s.current === s.to ? 'switched' : `runs ${s.current ?? 'nothing'}`})`,
        )
        .join(', ')
      return {
        artifact,
        steps: now,
        message: `an update of ${artifact} was killed while switching: ${switches}; \`deltaport update ${artifact}\` finishes it before anything else (only links move, no network needed, after each version is re-hashed and its signatures checked against the keys trusted now; one that fails puts the set back to the old versions), and so does a rollback of any of them before it rolls back`,
      }
    }),
  )
  return described.filter((report) => report !== null)
}

/**
 * Runs `work` holding the locks of `stores`, taken one by one in folder order (the order of
 * withOrderedLocks); into `wait.locks` when given, where those it holds already are not taken again.
 */
async function withLocks<T>(
  stores: readonly ArtifactStore[],
  wait: LockWait,
  work: () => Promise<T>,
): Promise<T> {
  const ordered = [...new Map(stores.map((s) => [s.dir, s])).values()].sort((a, b) =>
    a.dir < b.dir ? -1 : a.dir > b.dir ? 1 : 0,
  )
  const take = (i: number): Promise<T> => {
    const store = ordered[i]
    return store ? store.withLock(wait, () => take(i + 1)) : work()
  }
  return take(0)
}

/**
 * A staged dependency as it was staged, or `busy` saying which of the two things happened meanwhile:
 * it was moved (what runs now), or what runs is unchanged but the version staged to switch to is gone.
 * The update holds the dependency's lock from staging to the switch (withOrderedLocks), so no deltaport
 * command does either meanwhile (another update, a rollback or an uninstall waits for it); this guards
 * against what does not take the lock (a change by hand, a lock removed by hand), which would otherwise
 * be switched over. Before the lock was held, a concurrent update that downloaded the version, failed
 * and discarded it (discardNeverInstalled) caused the second; "changed ... now runs nothing" then sent
 * the user looking for a command that had not run.
 */
async function assertUnchanged(step: StagedSwitch, forName: string): Promise<void> {
  const { current } = await step.store.state()
  const name = step.store.name
  const version = step.manifest.version
  const details = { name, current, expected: step.from, staged: version }
  if (current !== step.from)
    throw new AgentError(
      'busy',
      `${name} was changed while ${forName}'s update held its lock (${current === null ? 'it was uninstalled' : `it now runs ${current}`}), by something that does not take deltaport's locks (a change by hand, a lock removed by hand); nothing was switched: run the update again`,
      details,
    )
  if (await step.store.has(version)) return
  throw new AgentError(
    'busy',
    `${name} ${version}, which this update was to switch to, was deleted while ${forName}'s update held its lock, by something that does not take deltaport's locks (a change by hand, a lock removed by hand); nothing was switched and ${name} still runs ${current ?? 'nothing (the device never had it)'}: run the update again, which downloads it again`,
    details,
  )
}

/**
 * After an update failed, deletes the versions it downloaded of dependencies the device did not have
 * (`from` null) and that are still not current: nothing ever ran them, and like a failed first install
 * they leave nothing behind (the artifact's folder goes with the last of it). A dependency the device
 * has keeps its staged version for the next try (pruning takes it beyond keepVersions). One switched
 * by a switch that failed part-way is current and stays. One this update found already on disk stays
 * too (what a killed update left is left as before; when no lock was held between staging and the
 * switch, it could be one another update under way had staged). An attempt that ends to start again in
 * lock order (withOrderedLocks) discards the same way; the next attempt downloads them again. `locks`:
 * the update's LockSet, which holds their locks already. Best effort and never waiting: a dependency
 * another process holds is left to it, and the update's own error is the one reported.
 */
export async function discardNeverInstalled(plan: SwitchPlan, locks?: LockSet): Promise<void> {
  for (const step of plan.steps) {
    if (step.from !== null || !step.downloaded) continue
    await step.store
      .withLock({ timeoutMs: 0, ...(locks ? { locks } : {}) }, () =>
        step.store.discardStaged(step.manifest.version),
      )
      .catch(() => undefined)
  }
}

/**
 * Puts back the dependencies a failed switch phase already switched, newest first, to the version
 * each had (kept installed: it is the store's previous). One that had none stays: nothing ran it.
 * Best effort: the error that stopped the switch is the one reported.
 */
async function switchBack(switched: readonly StagedSwitch[]): Promise<void> {
  for (const step of [...switched].reverse()) {
    if (step.from === null) continue
    const from = step.from
    await step.store
      .manifestOf(from)
      .then((envelope) => step.store.activate(envelope.signed))
      .catch(() => undefined)
  }
}

/**
 * Drops the journal of `store`'s own update killed while switching, for `uninstall` (lock held): the
 * artifact it was for is going, so the update is abandoned, not finished. Left, it kept the folder of
 * an artifact the device never had (a killed first install) alive, and `status` of a dependency in it
 * kept warning of an update whose finishing would only drop it.
 */
export async function dropInterruptedSwitch(store: ArtifactStore): Promise<void> {
  await removeJournal(store)
}

function journalPath(store: ArtifactStore): string {
  return join(store.dir, JOURNAL_FILE)
}

async function removeJournal(store: ArtifactStore): Promise<void> {
  await rm(journalPath(store), { force: true })
  await fsyncDir(store.dir)
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return null
  }
}
