/**
 * `deltaport devices enroll|status` for a device the operator revoked. A file of its own (its own local
 * edge): devices.test.ts enrolls close to the edge's 30-a-minute limit per address, and one more
 * enrollment there crowds out a later one.
 */
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { createEnrollmentCode, revokeDevice } from '../devices/codes.ts'
import { DeviceCredentialStore } from '../devices/credential-store.ts'
import { EdgeClient } from '../edge-client.ts'
import { makeWorkspace } from './fixtures.ts'
import { TEST_OPERATOR_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()
const run = promisify(execFile)
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')

/** `deltaport --json devices <command>` with `config` written to its own file. */
async function devicesCli(
  config: AgentConfig,
  command: 'enroll' | 'status',
): Promise<{ code: number; json: Record<string, unknown> }> {
  const file = join(config.installRoot, '..', 'enroll.deltaport.json')
  await writeFile(file, JSON.stringify(config))
  try {
    const { stdout } = await run(process.execPath, [BIN, '--json', '--config', file, 'devices', command])
    return { code: 0, json: JSON.parse(stdout) as Record<string, unknown> }
  } catch (error) {
    const e = error as { code: number; stdout: string }
    return { code: e.code, json: JSON.parse(e.stdout) as Record<string, unknown> }
  }
}

describe('deltaport devices enroll for a revoked device', () => {
  it('a renewal refused because the device was revoked drops the dead credential, so status says why', async () => {
    const edge = new EdgeClient(suite.edge.url)
    const { code } = await createEnrollmentCode(edge, TEST_OPERATOR_TOKEN, {
      label: 'enroll-then-revoked',
      maxDevices: 2,
    })
    const ws = await makeWorkspace(suite.edge.url)
    const device = { ...suite.ws.config, installRoot: ws.config.installRoot, enrollmentCode: code }
    const enrolled = await devicesCli(device, 'enroll')
    expect(enrolled.code).toBe(0)
    const deviceId = String((enrolled.json.device as { deviceId: string }).deviceId)
    await revokeDevice(edge, TEST_OPERATOR_TOKEN, deviceId)
    const refused = await devicesCli(device, 'enroll')
    expect(refused.code).toBe(5)
    // It said "enrolled as <id> … renews from …" after the edge had refused the device.
    expect(await new DeviceCredentialStore(device.installRoot).read()).toBeNull()
    const status = await devicesCli(device, 'status')
    expect(status.code).toBe(0)
    expect(status.json.device).toMatchObject({ enrolled: false })
    expect(JSON.stringify(status.json.device)).toContain(`device ${deviceId} was revoked`)
  })
})
