/**
 * kvflow's layers, checked by `npm run lint:deps` (and CI): imports point one
 * way, util -> binding -> device -> (io, layout side by side) -> store ->
 * pipeline -> cli, with no circles. src/errors.ts and src/defaults.ts sit in
 * the util layer. model/ depends only on layout (and util); reference/ only
 * on device, layout, binding and util. Type-only imports count too.
 */
const LAYERS_ABOVE = {
  util: '^src/(binding|device|io|layout|store|pipeline|model|reference|cli)/|^src/index\\.ts$',
  binding: '^src/(device|io|layout|store|pipeline|model|reference|cli)/|^src/index\\.ts$',
  device: '^src/(io|layout|store|pipeline|model|reference|cli)/|^src/index\\.ts$',
  io: '^src/(layout|store|pipeline|model|reference|cli)/|^src/index\\.ts$',
  layout: '^src/(io|store|pipeline|model|reference|cli)/|^src/index\\.ts$',
  store: '^src/(pipeline|model|reference|cli)/|^src/index\\.ts$',
  pipeline: '^src/(cli|reference)/|^src/index\\.ts$',
};

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Import circles make load order matter and layers meaningless.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'util-is-the-base',
      severity: 'error',
      comment: 'util/, errors.ts and defaults.ts import nothing of kvflow above them.',
      from: { path: '^src/(util/|errors\\.ts$|defaults\\.ts$)' },
      to: { path: LAYERS_ABOVE.util },
    },
    ...['binding', 'device', 'io', 'layout', 'store', 'pipeline'].map((layer) => ({
      name: `${layer}-points-down`,
      severity: 'error',
      comment: `${layer}/ imports only the layers below it.`,
      from: { path: `^src/${layer}/` },
      to: { path: LAYERS_ABOVE[layer] },
    })),
    {
      name: 'model-on-layout-only',
      severity: 'error',
      comment: 'model/ (the prefill model) depends on nothing but layout (and util).',
      from: { path: '^src/model/' },
      to: { path: '^src/', pathNot: '^src/(model|layout|util)/|^src/errors\\.ts$' },
    },
    {
      name: 'reference-on-device-and-layout-only',
      severity: 'error',
      comment: 'reference/ (the benchmark transformer layer) depends on device, layout, binding and util only.',
      from: { path: '^src/reference/' },
      to: { path: '^src/', pathNot: '^src/(reference|device|layout|binding|util)/|^src/(errors|defaults)\\.ts$' },
    },
    {
      name: 'test-hooks-stay-out',
      severity: 'error',
      comment: 'The testing accessors (device/testing.ts, io/testing.ts) are for tests and benchmarks only.',
      from: { path: '^src/', pathNot: '/testing\\.ts$' },
      to: { path: '^src/.+/testing\\.ts$' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'An import that resolves to nothing.',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|build|build-cmake|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js'] },
  },
};
