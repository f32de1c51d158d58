// The library's one name for its users: every layer, re-exported, so the CLI, the tests and
// other packages keep writing `import FineShard`. The layers and their arrows are in
// docs/ARCHITECTURE.md.
@_exported import FineShardExecution
@_exported import FineShardFormats
@_exported import FineShardModel
@_exported import FineShardOutput
@_exported import FineShardPlanning
@_exported import FineShardSystem
@_exported import FineShardVerification
