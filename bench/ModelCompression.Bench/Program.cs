// ModelCompression benchmarks: `dotnet run -c Release --project bench/ModelCompression.Bench -- <name> [options]`.
// Each benchmark prints ratios measured in one run, so the machine's speed cancels out.
using ModelCompression.Bench;

var benches = new Dictionary<string, Func<string[], int>>(StringComparer.OrdinalIgnoreCase)
{
    ["io"] = RoundTripBench.Run,
    ["io-child"] = RoundTripBench.Child,
    ["quant-latency"] = QuantizationBench.Latency,
    ["quant-time"] = QuantizationBench.Time,
    ["quant-llm"] = LlmQuantizationBench.Run,
    ["quant-budget"] = BudgetBench.Run,
    ["latency"] = LatencyBench.Run,
    ["latency-child"] = LatencyBench.ChildLoop,
    ["pruning-latency"] = PruningBench.Latency,
    ["pruning-large"] = PruningBench.Large,
    ["pruning-transformers"] = TransformerPruningBench.Run,
    ["pruning-llama"] = LlamaPruningBench.Run,
    ["large"] = LargeModelBench.Run,
    ["large-child"] = LargeModelBench.Child,
    ["large-write-child"] = LargeModelBench.Write,
    ["faults"] = FaultsBench.Run,
    ["faults-child"] = FaultsBench.Child,
    ["llama"] = LlamaBench.Run,
    ["llama-child"] = LlamaBench.Child,
    ["llama-tiny"] = LlamaBench.Tiny,
};
if (args.Length == 0 || !benches.TryGetValue(args[0], out var bench))
{
    Console.WriteLine("usage: bench <" + string.Join("|", benches.Keys.Where(k => !k.EndsWith("-child", StringComparison.Ordinal))) + "> [options]");
    return 2;
}
return bench(args[1..]);
