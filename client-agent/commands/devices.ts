import { type Command, InvalidArgumentError } from 'commander'
import {
  DeviceId,
  type DeviceInfo,
  EnrollmentCodeId,
  type EnrollmentCodeInfo,
  MAX_DEVICES_PAGE,
  MAX_DEVICES_PER_CODE,
} from '../../schemas/devices.ts'
import { type AgentConfig, operatorToken } from '../config.ts'
import {
  createEnrollmentCode,
  listDevices,
  listEnrollmentCodes,
  revokeDevice,
  revokeEnrollmentCode,
} from '../devices/codes.ts'
import { DeviceCredentialStore } from '../devices/credential-store.ts'
import { DeviceSession, renewalTime } from '../devices/session.ts'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import type { Reporter } from '../output.ts'
import { parseWith } from './arguments.ts'

interface ListOptions {
  code?: string
  after?: string
  limit: number
}

/** Devices `devices list` prints by default: enough for a look, bounded for a terminal. */
const DEFAULT_LIST_LIMIT = 10_000

interface CreateOptions {
  label: string
  max: number
  expiresDays: number
  credentialDays: number
}

function boundedInt(max: number, what: string) {
  return (value: string): number => {
    if (!/^\d{1,7}$/.test(value) || Number(value) < 1 || Number(value) > max)
      throw new InvalidArgumentError(`${what}: a whole number from 1 to ${max}`)
    return Number(value)
  }
}

function describeCode(code: EnrollmentCodeInfo): string {
  const state = code.revokedAt !== null ? `revoked ${code.revokedAt}` : `enrolls until ${code.expiresAt}`
  return `${code.id}  ${code.label}: ${code.enrolled}/${code.maxDevices} devices, ${state}, credentials last ${code.credentialDays} d`
}

function describeDevice(device: DeviceInfo): string {
  const enrolled =
    device.enrolledAt === null ? 'enrolled before devices were recorded' : `enrolled ${device.enrolledAt}`
  const renewed = device.renewedAt === null ? 'never renewed' : `renewed ${device.renewedAt}`
  const state = device.revokedAt === null ? 'active' : `revoked ${device.revokedAt}`
  return `${device.deviceId}  code ${device.codeId}: ${state}, ${enrolled}, ${renewed}, credential until ${device.credentialExpiresAt}`
}

/**
 * `deltaport devices list|revoke` and `deltaport devices code create|list|revoke` for operators (OPERATOR_TOKEN from
 * DELTAPORT_OPERATOR_TOKEN: codes are provisioning, which operators own, not releases), and
 * `deltaport devices enroll|status` on a device (the config's enrollmentCode; ADR 0026).
 */
export function registerDevicesCommands(
  program: Command,
  reporter: () => Reporter,
  config: () => Promise<AgentConfig>,
): void {
  const devices = program
    .command('devices')
    .description('device enrollment: enrollment codes and credentials')
  const code = devices
    .command('code')
    .description('enrollment codes (operators; needs DELTAPORT_OPERATOR_TOKEN)')
  const edge = async () => new EdgeClient((await config()).edgeUrl)

  code
    .command('create')
    .description('create an enrollment code to bake into device images (shown once)')
    .requiredOption('--label <label>', 'what the code is for, e.g. factory-A')
    .requiredOption('--max <devices>', 'devices it may enroll', boundedInt(MAX_DEVICES_PER_CODE, '--max'))
    .option(
      '--expires-days <days>',
      'days during which devices may enroll with it',
      boundedInt(3650, '--expires-days'),
      30,
    )
    .option(
      '--credential-days <days>',
      'lifetime of each device credential (renewed by the agent)',
      boundedInt(3650, '--credential-days'),
      365,
    )
    .action(async (options: CreateOptions) => {
      const created = await createEnrollmentCode(await edge(), operatorToken(), {
        label: options.label,
        maxDevices: options.max,
        expiresDays: options.expiresDays,
        credentialDays: options.credentialDays,
      })
      reporter().result(
        `${created.code}\n(shown once: put it in the devices' deltaport.json as "enrollmentCode")\n${describeCode(created.info)}`,
        { enrollmentCode: created },
      )
    })

  code
    .command('list')
    .description('enrollment codes with their device counts (never the codes themselves)')
    .action(async () => {
      const codes = await listEnrollmentCodes(await edge(), operatorToken())
      reporter().result(codes.length === 0 ? 'no enrollment codes' : codes.map(describeCode).join('\n'), {
        codes,
      })
    })

  code
    .command('revoke <id>')
    .description('revoke a code and every device credential it issued')
    .action(async (id: string) => {
      if (!EnrollmentCodeId.safeParse(id).success)
        throw new AgentError('usage', `"${id}" is not an enrollment code id (c followed by 12 characters)`)
      const revoked = await revokeEnrollmentCode(await edge(), operatorToken(), id)
      reporter().result(`revoked ${describeCode(revoked)}`, { enrollmentCode: revoked })
    })

  devices
    .command('list')
    .description('enrolled devices: code, enrollment, last renewal, revocation (operators)')
    .option(
      '--code <id>',
      'only the devices of this enrollment code',
      parseWith(EnrollmentCodeId, 'a code id'),
    )
    .option(
      '--after <deviceId>',
      'start after this device id (the "next" of an earlier list)',
      parseWith(DeviceId, 'a device id'),
    )
    .option(
      '--limit <n>',
      'devices to list at most',
      boundedInt(MAX_DEVICES_PER_CODE, '--limit'),
      DEFAULT_LIST_LIMIT,
    )
    .action(async (options: ListOptions) => {
      const client = await edge()
      const token = operatorToken()
      const found: DeviceInfo[] = []
      let after = options.after
      let next: string | null = null
      // Page by page (the edge answers 1000 at most), up to --limit; `next` says where to go on.
      do {
        const page = await listDevices(client, token, {
          ...(options.code === undefined ? {} : { code: options.code }),
          ...(after === undefined ? {} : { after }),
          limit: Math.min(MAX_DEVICES_PAGE, options.limit - found.length),
        })
        found.push(...page.devices)
        next = page.next
        after = page.next ?? undefined
      } while (next !== null && found.length < options.limit)
      const more = next === null ? '' : `\n… more: deltaport devices list --after ${next}`
      reporter().result(
        found.length === 0 ? 'no enrolled devices' : `${found.map(describeDevice).join('\n')}${more}`,
        { devices: found, next },
      )
    })

  devices
    .command('revoke <deviceId>')
    .description("revoke one device: the edge refuses its credential and won't renew it (operators)")
    .action(async (deviceId: string) => {
      if (!DeviceId.safeParse(deviceId).success)
        throw new AgentError('usage', `"${deviceId}" is not a device id (d followed by 20 characters)`)
      const revoked = await revokeDevice(await edge(), operatorToken(), deviceId)
      reporter().result(`revoked ${describeDevice(revoked)}`, { device: revoked })
    })

  devices
    .command('enroll')
    .description("enroll this device now with the config's enrollmentCode (agents also do it on first need)")
    .action(async () => {
      const loaded = await config()
      if (loaded.enrollmentCode === undefined)
        throw new AgentError('config', 'no enrollmentCode in the config')
      const session = new DeviceSession({ ...loaded, enrollmentCode: loaded.enrollmentCode })
      const store = new DeviceCredentialStore(loaded.installRoot)
      const stored = await store.read()
      const credential = await session.enroll(stored?.credential, true)
      if (credential === null) {
        // Refused for good (the device or its code revoked): the stored credential of this code is
        // dead, as a report's re-enrollment concludes too. Kept, `devices status` would go on saying
        // "enrolled as …" instead of why the edge refused.
        const refusal = await store.refusal()
        if (stored !== null && refusal !== null && refusal.codeSha256 === stored.codeSha256)
          await store.forget()
        // The failure as it was (exit 4 for an edge out of reach, 10 for the credential file): only a
        // refusal by the edge is edge-rejected (exit 5).
        throw (
          session.lastFailure ??
          new AgentError('edge-rejected', session.lastError ?? 'enrollment failed', { enroll: true })
        )
      }
      reporter().result(
        `enrolled as ${credential.deviceId} (code ${credential.codeId}, until ${credential.expiresAt})`,
        {
          device: {
            deviceId: credential.deviceId,
            codeId: credential.codeId,
            expiresAt: credential.expiresAt,
          },
        },
      )
    })

  devices
    .command('status')
    .description("this device's enrollment: device id, code, expiry, or why enrollment was refused")
    .action(async () => {
      const loaded = await config()
      const store = new DeviceCredentialStore(loaded.installRoot)
      const [stored, refusal] = await Promise.all([store.read(), store.refusal()])
      const renewsFrom = stored === null ? null : new Date(renewalTime(stored)).toISOString()
      const text =
        stored !== null
          ? `enrolled as ${stored.deviceId} (code ${stored.codeId}, until ${stored.expiresAt}, renews from ${renewsFrom})`
          : refusal !== null
            ? `not enrolled: refused on ${refusal.at}: ${refusal.detail}`
            : loaded.enrollmentCode === undefined
              ? 'not enrolled (no enrollmentCode in the config: reports are anonymous)'
              : 'not enrolled yet (the agent enrolls on its first report)'
      reporter().result(text, {
        device:
          stored === null
            ? { enrolled: false, refusal }
            : {
                enrolled: true,
                deviceId: stored.deviceId,
                codeId: stored.codeId,
                expiresAt: stored.expiresAt,
                renewsFrom,
              },
      })
    })
}
