import { type ArtifactsView, loadArtifacts } from './sections/artifacts.ts'
import { type ConfigView, loadConfig } from './sections/config.ts'
import { type ForecastView, loadForecast } from './sections/forecast.ts'
import {
  type HotArtifactsView,
  knownRegions,
  loadHotArtifacts,
  loadPrefetch,
  type PrefetchView,
} from './sections/regions.ts'
import { loadRollouts, type RolloutsView } from './sections/rollouts.ts'
import { loadSection, type Section } from './sections/section.ts'
import { loadShards, type ShardsView } from './sections/shards.ts'

/** Everything the dashboard shows; each section loaded independently (see sections/section.ts). */
export interface DashboardData {
  generatedAt: string
  artifacts: Section<ArtifactsView>
  hotArtifacts: Section<HotArtifactsView>
  prefetch: Section<PrefetchView>
  config: Section<ConfigView>
  rollouts: Section<RolloutsView>
  shards: Section<ShardsView>
  forecast: Section<ForecastView>
}

export async function loadDashboard(env: Env, now = Date.now()): Promise<DashboardData> {
  // Both regional sections ask the same regions; a failure to list them shows in both.
  const regions = knownRegions(env)
  // Not left unhandled when no section awaits it (each section reports its own failure).
  regions.catch(() => undefined)
  const [artifacts, hotArtifacts, prefetch, config, rollouts, shards, forecast] = await Promise.all([
    loadSection('artifacts', () => loadArtifacts(env)),
    loadSection('hot-artifacts', async () => loadHotArtifacts(env, await regions)),
    loadSection('prefetch', async () => loadPrefetch(env, await regions)),
    loadSection('config', () => loadConfig(env)),
    loadSection('rollouts', () => loadRollouts(env)),
    loadSection('shards', () => loadShards(env)),
    loadSection('forecast', () => loadForecast(env, now)),
  ])
  return {
    generatedAt: new Date(now).toISOString(),
    artifacts,
    hotArtifacts,
    prefetch,
    config,
    rollouts,
    shards,
    forecast,
  }
}
