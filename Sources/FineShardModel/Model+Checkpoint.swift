import FineShardFormats

extension Model {
    /// Recognizes the model of `checkpoint`: its `config.json` decoded (errors name that file)
    /// and its tensor names. The one way plan, shard, inspect and forward-check learn a model.
    public static func recognize(_ checkpoint: Checkpoint) throws -> Model {
        let config = try checkpoint.config.map { try ModelConfig.decode($0, file: checkpoint.path(of: "config.json")) }
        return try recognize(sorted: checkpoint.tensors, config: config)
    }
}
