import { createHash } from 'node:crypto'
import { open, readFile, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { StoredDeviceCredential } from '../../schemas/devices.ts'
import { fsyncDir, tempPathFor } from '../fs/atomic.ts'
import { makeDirs } from '../fs/make-dirs.ts'

/** Why the edge refused the configured code (unknown, revoked, expired, full): no retries until it changes. */
export const EnrollmentRefusal = z.object({
  codeSha256: z.string().regex(/^[0-9a-f]{64}$/),
  status: z.number().int(),
  detail: z.string().max(600),
  at: z.string().max(40),
})
export type EnrollmentRefusal = z.infer<typeof EnrollmentRefusal>

export function codeSha256(code: string): string {
  return createHash('sha256').update(code).digest('hex')
}

/**
 * The device's credential and the last refusal of its enrollment code, under `<installRoot>/.device/`
 * (0700; files 0600, written temp → fsync → rename so a crash never leaves half a credential).
 */
export class DeviceCredentialStore {
  readonly dir: string

  constructor(installRoot: string) {
    this.dir = join(installRoot, '.device')
  }

  get credentialPath(): string {
    return join(this.dir, 'credential.json')
  }

  get refusalPath(): string {
    return join(this.dir, 'enrollment-refused.json')
  }

  /** The stored credential, or null when there is none or it is unreadable (enrolling again fixes it). */
  async read(): Promise<StoredDeviceCredential | null> {
    return readJson(this.credentialPath, StoredDeviceCredential)
  }

  async write(credential: StoredDeviceCredential): Promise<void> {
    await this.writePrivate(this.credentialPath, JSON.stringify(credential))
    await rm(this.refusalPath, { force: true })
  }

  async forget(): Promise<void> {
    await rm(this.credentialPath, { force: true })
  }

  async refusal(): Promise<EnrollmentRefusal | null> {
    return readJson(this.refusalPath, EnrollmentRefusal)
  }

  async recordRefusal(refusal: EnrollmentRefusal): Promise<void> {
    await this.writePrivate(this.refusalPath, JSON.stringify(refusal))
  }

  private async writePrivate(target: string, text: string): Promise<void> {
    await makeDirs(this.dir, 0o700)
    const temp = tempPathFor(target)
    const handle = await open(temp, 'wx', 0o600)
    try {
      await handle.writeFile(text)
      await handle.sync()
    } finally {
      await handle.close()
    }
    try {
      await rename(temp, target)
    } catch (error) {
      await rm(temp, { force: true })
      throw error
    }
    await fsyncDir(this.dir)
  }
}

async function readJson<T>(
  path: string,
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false } },
): Promise<T | null> {
  try {
    const parsed = schema.safeParse(JSON.parse(await readFile(path, 'utf8')))
    return parsed.success ? parsed.data : null
  } catch {
    return null
  }
}
