using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Distillation;

/// <summary>The student inputs, teacher outputs and labels of one training (or validation) step.</summary>
internal sealed class StepBatch
{
    public required Dictionary<string, Tensor> Inputs;
    public required int Rows;
    public required Targets Targets;
}

/// <summary>Where a step's batch comes from: rows of a data file, or windows of a token stream.</summary>
internal interface IBatchSource
{
    /// <summary>Steps in one pass over the data.</summary>
    long StepsPerEpoch { get; }
    void StartEpoch();
    StepBatch Next(CancellationToken cancellation);
}

/// <summary>A data file's arrays mapped to the student's inputs, as columns of rows, with the labels (one or one per position per row).</summary>
internal sealed class Prepared
{
    public required string Source;
    public required string[] Names;          // student input names
    public required Array[] Columns;          // per input: rows × rowSize values, float[] or long[] (token ids)
    public required int[][] RowShapes;
    public required int Rows;
    public long[]? Labels;
    /// <summary>Labels per row: 1 for [rows], the product of the trailing dimensions for [rows, positions...].</summary>
    public int LabelsPerRow = 1;

    public static Prepared From(DataSet data, OnnxModel student, string role)
    {
        var inputs = InputSynthesizer.Inputs(student);
        var map = ModelInputs.Bind(student, data);
        var names = inputs.Select(i => i.Name).ToArray();
        var columns = new Array[names.Length];
        var shapes = new int[names.Length][];
        for (int i = 0; i < names.Length; i++)
        {
            var a = map[names[i]];
            var dt = (DT)inputs[i].ElementTypeCode;
            if (dt is not (DT.Float or DT.Int64))
                throw new EngineException("DistillationInputTypeUnsupported", EngineErrorKind.NotImplemented,
                    $"Student input '{names[i]}' is {inputs[i].ElementType}; the training engine takes float and int64 inputs.");
            if (a.Shape.Length == 0)
                throw new EngineException("DataShapeMismatch", EngineErrorKind.InvalidData, $"The {role} data's array for '{names[i]}' is a scalar, not rows.") { Target = data.Source };
            columns[i] = dt == DT.Int64 ? a.AsInt64() : a.AsFloat();
            shapes[i] = a.Shape[1..].Select(d => checked((int)d)).ToArray();
        }
        int rows = checked((int)data.Rows);
        if (rows == 0) throw new EngineException("DataFileEmpty", EngineErrorKind.InvalidData, $"The {role} data '{data.Source}' has no rows.") { Target = data.Source };
        var labels = data.LabelArray;
        return new Prepared
        {
            Source = data.Source, Names = names, Columns = columns, RowShapes = shapes, Rows = rows,
            Labels = labels?.AsInt64(), LabelsPerRow = labels is null ? 1 : checked((int)(labels.Length / Math.Max(1, labels.Rows))),
        };
    }

    public Dictionary<string, Tensor> Batch(ReadOnlySpan<int> rows)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        for (int i = 0; i < Names.Length; i++)
        {
            int size = Tensor.Count(RowShapes[i]);
            var column = Columns[i];
            var values = Array.CreateInstance(column.GetType().GetElementType()!, rows.Length * size);
            for (int r = 0; r < rows.Length; r++) Array.Copy(column, (long)rows[r] * size, values, (long)r * size, size);
            int[] shape = [rows.Length, .. RowShapes[i]];
            result[Names[i]] = values is long[] ids ? Tensor.Int64(shape, ids) : Tensor.Float(shape, (float[])values);
        }
        return result;
    }
}

/// <summary>
/// Batches of rows of a data file, shuffled per epoch when asked. The teacher's outputs are computed once for all rows
/// and cached when they fit in <see cref="CacheBytes"/> (the data do not change between epochs); larger outputs
/// (sequence models over many rows) are computed per batch instead.
/// </summary>
internal sealed class RowBatches : IBatchSource
{
    /// <summary>Largest teacher output kept for a whole data set.</summary>
    public const long CacheBytes = 1L << 30;

    readonly Prepared data;
    readonly TeacherModel teacher;
    readonly int batchSize;
    readonly bool shuffle;
    readonly Random rng;
    readonly int[] order;
    readonly float[]? cache;
    float[]? perBatch;
    int position;

    /// <param name="rowShape">The teacher's output shape per row on these data (from a probe).</param>
    public RowBatches(Prepared data, TeacherModel teacher, int[] rowShape, int batchSize, bool shuffle, Random rng, int teacherBatchSize, CancellationToken cancellation)
    {
        this.data = data; this.teacher = teacher; this.batchSize = batchSize; this.shuffle = shuffle; this.rng = rng;
        RowShape = rowShape;
        order = Enumerable.Range(0, data.Rows).ToArray();
        int rowSize = RowSize;
        if (4L * data.Rows * rowSize <= CacheBytes)
        {
            cache = new float[(long)data.Rows * rowSize];
            var buffer = new float[(long)Math.Min(teacherBatchSize, data.Rows) * rowSize];
            for (int start = 0; start < data.Rows; start += teacherBatchSize)
            {
                cancellation.ThrowIfCancellationRequested();
                int count = Math.Min(teacherBatchSize, data.Rows - start);
                teacher.Run(data.Batch(order.AsSpan(start, count)), count, rowShape, buffer, cancellation);
                Array.Copy(buffer, 0, cache, (long)start * rowSize, (long)count * rowSize);
            }
        }
    }

    public int[] RowShape { get; }
    public int RowSize => Tensor.Count(RowShape);
    public long StepsPerEpoch => (data.Rows + batchSize - 1) / batchSize;
    /// <summary>Whether the teacher's outputs were computed once and kept.</summary>
    public bool Cached => cache is not null;
    /// <summary>The cached teacher outputs, row after row (null when computed per batch).</summary>
    public float[]? Cache => cache;

    public void StartEpoch()
    {
        position = 0;
        if (shuffle) rng.Shuffle(order);
    }

    public StepBatch Next(CancellationToken cancellation)
    {
        int count = Math.Min(batchSize, data.Rows - position);
        var idx = order.AsSpan(position, count);
        position += count;
        var inputs = data.Batch(idx);
        int rowSize = RowSize;
        float[] values;
        var teacherStart = new int[count];
        if (cache is not null)
        {
            values = cache;
            for (int r = 0; r < count; r++) teacherStart[r] = checked(idx[r] * rowSize);
        }
        else
        {
            values = perBatch ??= new float[(long)batchSize * rowSize];
            teacher.Run(inputs, count, RowShape, values, cancellation);
            for (int r = 0; r < count; r++) teacherStart[r] = r * rowSize;
        }
        var labelStart = new int[count];
        for (int r = 0; r < count; r++) labelStart[r] = idx[r] * data.LabelsPerRow;
        return new StepBatch { Inputs = inputs, Rows = count, Targets = new Targets(values, teacherStart, data.Labels, labelStart) };
    }
}
