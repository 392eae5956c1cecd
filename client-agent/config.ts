import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { z } from 'zod'
import { ChannelName, Sha256Hex } from '../schemas/common.ts'
import { EnrollmentCode } from '../schemas/devices.ts'
import { Ed25519PublicKey } from '../schemas/ed25519-public-key.ts'
import { MAX_SIGNATURES } from '../schemas/manifest.ts'
import { AgentError, systemError } from './errors.ts'

/**
 * A pinned key as `deltaport keygen` prints it: its keyid must be the sha256 of its public key, as in a
 * root. A keyid filed under another key's public half matched no honest signature (they carry the real
 * keyid) and, before thresholds counted key bytes, let one key listed twice count as two.
 */
const PinnedKey = z
  .object({ keyid: Sha256Hex, publicKey: Ed25519PublicKey })
  .refine(
    (key) => createHash('sha256').update(Buffer.from(key.publicKey, 'base64')).digest('hex') === key.keyid,
    {
      message: 'keyid is not the sha256 of publicKey (use the keyid `deltaport keygen` printed with it)',
      path: ['keyid'],
    },
  )

/**
 * `deltaport.json`: where the edge is, which keys to trust, where installs live. Strict: a key this
 * agent does not know (a typo such as `bandwithCapBps`, or a knob of a newer agent) is refused naming
 * it, rather than silently running with the default the owner meant to change.
 */
export const AgentConfig = z
  .strictObject({
    edgeUrl: z.url({
      protocol: /^https?$/,
      error: 'an http:// or https:// URL (the edge, e.g. https://updates.example.com)',
    }),
    trustedKeys: z.array(PinnedKey).default([]),
    /**
     * The edge's index-signing keys (ADR 0032: `deltaport keygen`'s public half of INDEX_SIGNING_KEY).
     * When set, an index is used only under a fresh statement signed by one of them (freeze defence).
     */
    indexKeys: z.array(PinnedKey).max(8).default([]),
    /**
     * How many distinct keys of trustedKeys must sign a manifest or yank statement (default 1). Under a
     * `root` the root's maintainers role says instead.
     */
    maintainerThreshold: z
      .number()
      .int()
      .min(1)
      // More could never be met: a manifest carries at most MAX_SIGNATURES signatures.
      .max(MAX_SIGNATURES, {
        message: `at most ${MAX_SIGNATURES}, the most signatures a signed manifest carries (more could never be met)`,
      })
      .optional(),
    /**
     * Path to the root metadata this device ships with (ADR 0035, `deltaport root create`). When set, the
     * agent follows the edge's chain of newer roots and takes trustedKeys, maintainerThreshold and
     * indexKeys from the newest, so this config must not list them.
     */
    root: z.string().min(1).optional(),
    installRoot: z.string().min(1).default('./deltaport-store'),
    /** Maintainers only: path to the key file `deltaport keygen` wrote. */
    signingKey: z.string().optional(),
    /** Cap on download rate in bytes per second; 0 means none. */
    bandwidthCapBps: z.number().int().nonnegative().default(0),
    /**
     * The overall bound on a full download (install, update, prefetch): it must finish within
     * `transferGraceSeconds` plus its size at this rate (bytes per second; default 4096, 0 = no bound),
     * or it fails as `network` (exit 4) with the partial kept for the next run. A device's
     * `bandwidthCapBps` below it lowers it to the cap. Following the plans of an update (delta,
     * chunk-sync; re-plans and the plan requests included) has one such bound together, from the
     * target's full size; past it the full download follows, under its own.
     */
    transferMinRateBps: z.number().int().nonnegative().optional(),
    /** Seconds every full download gets on top of its size at `transferMinRateBps` (default 120). */
    transferGraceSeconds: z
      .number()
      .int()
      .min(1)
      .max(7 * 24 * 3600)
      .optional(),
    /** The channel installs and updates follow; a name the edge accepts, so a typo fails here, not at each poll. */
    channel: ChannelName.default('stable'),
    /**
     * Memory an update may use to rebuild an archive from an archive-aware delta (default: what the
     * process can still allocate). Deltas that would need more are refused and the update takes the
     * next plan (chunk-sync or the full artifact).
     */
    applyMemoryBytes: z.number().int().positive().optional(),
    /**
     * Installed versions kept per artifact after an install: current and previous (rollback's target)
     * always, then the newest releases; older ones are deleted. Versions a `deltaport run` service still
     * runs are kept beyond this.
     */
    keepVersions: z.number().int().min(2).max(1000).default(2),
    /**
     * Free space an install leaves on the install root's disk (default 64 MiB): an update that would go
     * below it is refused before anything is written (`no-space`, exit 13); prefetching keeps twice this.
     */
    minFreeBytes: z.number().int().nonnegative().optional(),
    // Daemon knobs (`deltaport daemon`). Optional so existing configs stay valid; `daemonSettings` applies
    // the defaults.
    /** The device's link is metered (mobile, satellite): the daemon does not prefetch on it. */
    metered: z.boolean().optional(),
    /** Prefetch even while `metered` is true. */
    allowMetered: z.boolean().optional(),
    /** Disk the staging area (`<installRoot>/.staging`) may use; 0 disables prefetching. */
    stagingBudgetBytes: z.number().int().nonnegative().optional(),
    /** The host counts as idle while the 1-minute load average per core is below this. */
    idleLoadPerCore: z.number().positive().optional(),
    /** Seconds between prefetch polls. */
    daemonIntervalSeconds: z
      .number()
      .int()
      .min(5)
      .max(7 * 24 * 3600)
      .optional(),
    /** Download rate cap for prefetching in bytes per second; 0 = none (default: `bandwidthCapBps`). */
    prefetchBandwidthCapBps: z.number().int().nonnegative().optional(),
    /**
     * The operator's enrollment code (`deltaport devices code create`): the agent trades it once for a
     * device credential (`<installRoot>/.device/credential.json`) and sends that with telemetry, rollout
     * outcomes and prefetch queries (client-agent/devices/, ADR 0026). Without it reports stay anonymous.
     */
    enrollmentCode: EnrollmentCode.optional(),
  })
  .refine((c) => !c.root || (c.trustedKeys.length === 0 && c.indexKeys.length === 0), {
    message: 'a root replaces trustedKeys and indexKeys: remove them (the root names the keys)',
    path: ['root'],
  })
  .refine(
    (c) => c.root || c.trustedKeys.length === 0 || (c.maintainerThreshold ?? 1) <= c.trustedKeys.length,
    {
      message: 'maintainerThreshold is above the number of trustedKeys',
      path: ['maintainerThreshold'],
    },
  )
export type AgentConfig = z.infer<typeof AgentConfig>

export interface DaemonSettings {
  metered: boolean
  allowMetered: boolean
  stagingBudgetBytes: number
  idleLoadPerCore: number
  intervalSeconds: number
  bandwidthCapBps: number
}

export const DAEMON_DEFAULTS = {
  stagingBudgetBytes: 512 * 1024 ** 2,
  idleLoadPerCore: 0.5,
  intervalSeconds: 900,
} as const

/** The daemon's knobs with defaults applied. */
export function daemonSettings(config: AgentConfig): DaemonSettings {
  return {
    metered: config.metered ?? false,
    allowMetered: config.allowMetered ?? false,
    stagingBudgetBytes: config.stagingBudgetBytes ?? DAEMON_DEFAULTS.stagingBudgetBytes,
    idleLoadPerCore: config.idleLoadPerCore ?? DAEMON_DEFAULTS.idleLoadPerCore,
    intervalSeconds: config.daemonIntervalSeconds ?? DAEMON_DEFAULTS.intervalSeconds,
    bandwidthCapBps: config.prefetchBandwidthCapBps ?? config.bandwidthCapBps,
  }
}

export const DEFAULT_CONFIG_PATH = 'deltaport.json'

/**
 * Reads and validates the config file; relative paths inside it are resolved against the file's
 * folder so the agent behaves the same from any working directory.
 */
export async function loadConfig(path = DEFAULT_CONFIG_PATH): Promise<AgentConfig> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (error) {
    // A missing file wants the hint; anything else (a directory, no permission) wants the system's reason.
    const system = systemError(error)
    if (system && system.code !== 'ENOENT') {
      throw new AgentError('config', `cannot read config file ${path}: ${system.reason}`, {
        errno: system.code,
        path,
      })
    }
    // Name the folder it was looked for in: `npm run deltaport` runs in the checkout, not where the user is.
    throw new AgentError(
      'config',
      `cannot read config file ${path}: there is none at ${resolve(path)} (create one: see README "Agent config"), or pass --config <file>`,
      { path: resolve(path) },
    )
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new AgentError('config', `${path} is not valid JSON`)
  }
  const parsed = AgentConfig.safeParse(json)
  if (!parsed.success) {
    const issues = parsed.error.issues
      .map((i) => `${i.path.join('.') || '(root)'}: ${describeIssue(i)}`)
      .join('; ')
    throw new AgentError('config', `${path} is invalid: ${issues}`)
  }
  const base = resolve(path, '..')
  const config = parsed.data
  return {
    ...config,
    installRoot: resolve(base, config.installRoot),
    ...(config.signingKey ? { signingKey: resolve(base, config.signingKey) } : {}),
    ...(config.root ? { root: resolve(base, config.root) } : {}),
  }
}

/** zod's words for an issue, naming the unknown keys themselves (zod says only "Unrecognized key"). */
function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code !== 'unrecognized_keys') return issue.message
  return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')} (remove or correct ${issue.keys.length > 1 ? 'them' : 'it'}; see README "Agent config")`
}

/** The maintainer token comes from the environment, never from a file that might be committed. */
export function publishToken(): string {
  const token = process.env.DELTAPORT_TOKEN
  if (!token)
    throw new AgentError(
      'config',
      "set DELTAPORT_TOKEN to the edge's PUBLISH_TOKEN (the maintainers' token for publish, re-sign, yank, rollouts and roots)",
    )
  return token
}

/** The operator's bearer token (the edge's OPERATOR_TOKEN) for enrollment codes, from the environment. */
export function operatorToken(): string {
  const token = process.env.DELTAPORT_OPERATOR_TOKEN
  if (!token)
    throw new AgentError('config', 'set DELTAPORT_OPERATOR_TOKEN to the edge operator token (OPERATOR_TOKEN)')
  return token
}
