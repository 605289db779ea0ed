using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;
using ModelCompression.Native.Data;

namespace ModelCompression.Native.Quantization;

/// <summary>Calibration data from a file or a folder of files: the folder's files become one data set (rows appended, arrays matched by name).</summary>
public static class CalibrationDataLoader
{
    public static DataSet Load(string path)
    {
        var sets = DataSet.LoadMany(path);
        if (sets.Count == 1) return sets[0];
        var first = sets[0];
        var arrays = new List<NamedArray>();
        foreach (var a in first.Arrays)
        {
            var parts = new List<NamedArray>();
            foreach (var s in sets)
            {
                var match = s.Arrays.FirstOrDefault(x => x.Name == a.Name)
                    ?? throw new EngineException("CalibrationDataMismatch", EngineErrorKind.InvalidData,
                        $"Calibration file '{s.Source}' has no array '{a.Name}' (the first file, '{first.Source}', has).") { Target = s.Source };
                if (match.ElementType != a.ElementType || !match.Shape.Skip(1).SequenceEqual(a.Shape.Skip(1)))
                    throw new EngineException("CalibrationDataMismatch", EngineErrorKind.InvalidData,
                        $"Array '{a.Name}' in '{s.Source}' is {match} but {a} in '{first.Source}'; calibration files must agree.") { Target = s.Source };
                parts.Add(match);
            }
            long rows = parts.Sum(p => p.Rows);
            var data = Array.CreateInstance(a.ElementType, parts.Sum(p => (long)p.Length));
            long offset = 0;
            foreach (var p in parts) { Array.Copy(p.Data, 0, data, offset, p.Length); offset += p.Length; }
            var shape = (long[])a.Shape.Clone();
            shape[0] = rows;
            arrays.Add(new NamedArray(a.Name, shape, data));
        }
        return new DataSet(path, arrays);
    }
}
