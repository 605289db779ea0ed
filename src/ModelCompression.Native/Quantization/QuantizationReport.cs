using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Quantization;

/// <summary>Collects what a quantization pass did into a <see cref="ModelReport"/>.</summary>
internal sealed class QuantizationReport
{
    public const string Quantized = ReportActions.Quantized;
    public const string Skipped = ReportActions.Skipped;
    public const string Converted = ReportActions.Converted;
    public const string Kept = ReportActions.Kept;
    /// <summary>A whole configuration an accuracy budget's search verified (bytes against the figure).</summary>
    public const string Candidate = ReportActions.Candidate;

    public ModelReport Report { get; }
    readonly Dictionary<string, int> quantizedByOp = new(StringComparer.Ordinal);

    public QuantizationReport(string stage) => Report = new ModelReport { Stage = stage };

    public void Done(NodeProto node, string detail, string action = Quantized, double? error = null, long? bytes = null)
    {
        Report.Entries.Add(new ReportEntry(NodeName(node), node.OpType, action, detail) { Error = error, Bytes = bytes });
        if (action is Quantized or Converted) quantizedByOp[node.OpType] = quantizedByOp.GetValueOrDefault(node.OpType) + 1;
    }

    public void Keep(NodeProto node, string reason) => Report.Entries.Add(new ReportEntry(NodeName(node), node.OpType, Kept, reason));

    /// <summary>A tensor (weight) converted or kept, outside any one node.</summary>
    public void Tensor(string name, string detail, string action = Converted)
    {
        Report.Entries.Add(new ReportEntry(name, "Initializer", action, detail));
        if (action is Quantized or Converted) quantizedByOp["Initializer"] = quantizedByOp.GetValueOrDefault("Initializer") + 1;
    }

    public void Skip(NodeProto node, string reason) => Report.Entries.Add(new ReportEntry(NodeName(node), node.OpType, Skipped, reason));

    public void Note(string note) { if (!Report.Notes.Contains(note)) Report.Notes.Add(note); }

    /// <summary>A line the user should act on (shown as a warning), unlike a <see cref="Note"/>.</summary>
    public void Warn(string warning) { if (!Report.Warnings.Contains(warning)) Report.Warnings.Add(warning); }

    public int Count => quantizedByOp.Values.Sum();

    public void Finish(long sizeBefore, long sizeAfter, long weightBytesBefore, long weightBytesAfter)
    {
        foreach (var (op, n) in quantizedByOp.OrderBy(kv => kv.Key, StringComparer.Ordinal)) Report.Metrics[ReportMetrics.QuantizedPrefix + op] = n;
        Report.Metrics["NodesQuantized"] = Count;
        Report.Metrics["NodesSkipped"] = Report.Entries.Count(e => e.Action == Skipped);
        Report.Metrics[ReportMetrics.SizeBefore] = sizeBefore;
        Report.Metrics[ReportMetrics.SizeAfter] = sizeAfter;
        Report.Metrics["WeightBytesBefore"] = weightBytesBefore;
        Report.Metrics["WeightBytesAfter"] = weightBytesAfter;
        if (sizeBefore > 0) Report.Metrics["SizeRatio"] = (double)sizeAfter / sizeBefore;
        var errors = Report.Entries.Where(e => e.Error is not null).Select(e => e.Error!.Value).ToList();
        if (errors.Count > 0)
        {
            Report.Metrics[ReportMetrics.ReconstructionErrorMean] = errors.Average();
            Report.Metrics[ReportMetrics.ReconstructionErrorMax] = errors.Max();
        }
    }

    public static string NodeName(NodeProto n) => string.IsNullOrEmpty(n.Name) ? $"{n.OpType}({string.Join(",", n.Output)})" : n.Name;
}
