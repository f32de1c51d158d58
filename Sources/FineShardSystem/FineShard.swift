/// fineshard: offline checkpoint resharding for vLLM fine-grained tensor parallelism.
public enum FineShard {
    /// The tool's version, recorded in every manifest.
    public static let version = "0.1.0"
}
