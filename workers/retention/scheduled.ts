import { getRuntimeConfig } from '../config/runtime-config.ts'
import { pruneStorage } from './prune.ts'

/** The cron trigger's work (wrangler.toml `[triggers] crons`): storage retention. */
export async function runScheduled(env: Env, scheduledTime: number): Promise<void> {
  try {
    await pruneStorage(env.ARTIFACTS, await getRuntimeConfig(env), scheduledTime)
  } catch (error) {
    console.log(JSON.stringify({ level: 'error', msg: 'retention pass failed', error: String(error) }))
    throw error
  }
}
