using System.Text;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Distillation;

namespace ModelCompression.Engine.Tests;

/// <summary>Token streams (1-D .npy of token ids) and the windows language-model distillation draws from them.</summary>
public class TokenStreamTests
{
    /// <summary>A version-1 .npy file with the given NumPy type string, shape text and raw little-endian values.</summary>
    internal static void WriteNpy(string path, string descr, string shape, byte[] values)
    {
        string header = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}";
        header += new string(' ', (16 - (10 + header.Length + 1) % 16) % 16) + "\n";
        using var f = File.Create(path);
        f.Write([0x93, .. "NUMPY"u8, 1, 0, (byte)header.Length, (byte)(header.Length >> 8)]);
        f.Write(Encoding.ASCII.GetBytes(header));
        f.Write(values);
    }

    static byte[] Bytes<T>(IEnumerable<long> values, Func<long, T> cast) where T : struct =>
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.Select(cast).ToArray().AsSpan()).ToArray();

    public static TheoryData<string> IntegerTypes => new() { "<i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8" };

    [Theory]
    [MemberData(nameof(IntegerTypes))]
    public void EveryIntegerTypeReadsAsInt64Windows(string descr)
    {
        using var tmp = new TempDir();
        var ids = Enumerable.Range(0, 1000).Select(i => (long)(i * 7 % 120)).ToArray();
        byte[] raw = descr[1..] switch
        {
            "i1" => Bytes(ids, v => (sbyte)v), "u1" => Bytes(ids, v => (byte)v), "i2" => Bytes(ids, v => (short)v), "u2" => Bytes(ids, v => (ushort)v),
            "i4" => Bytes(ids, v => (int)v), "u4" => Bytes(ids, v => (uint)v), "i8" => Bytes(ids, v => v), _ => Bytes(ids, v => (ulong)v),
        };
        WriteNpy(tmp.File("t.npy"), descr, "(1000,)", raw);
        using var stream = TokenStream.Open(tmp.File("t.npy"));
        Assert.Equal(1000, stream.Length);
        Assert.Equal((0L, 119L), (stream.MinId, stream.MaxId));
        var window = new long[50];
        stream.CopyWindow(950, window);
        Assert.Equal(ids[950..], window);
        Assert.Throws<ArgumentOutOfRangeException>(() => stream.CopyWindow(951, window));
    }

    [Fact]
    public void WindowsAreNextTokenPairsDrawnBySeed()
    {
        using var tmp = new TempDir();
        var ids = Enumerable.Range(0, 5000).Select(i => (long)(i % 251)).ToArray();
        WriteNpy(tmp.File("t.npy"), "<i8", "(5000,)", Bytes(ids, v => v));
        using var stream = TokenStream.Open(tmp.File("t.npy"));
        long[][] Draw(int seed, int batches)
        {
            var w = new TokenWindows(stream, 16, 4, new Random(seed));
            var all = new List<long[]>();
            for (int b = 0; b < batches; b++)
            {
                w.Next();
                for (int r = 0; r < 4; r++)
                {
                    long start = w.Starts[r];
                    Assert.InRange(start, 0, 5000 - 17);
                    // x = tokens[i, i+L), y = tokens[i+1, i+L+1)
                    Assert.Equal(ids.AsSpan((int)start, 16).ToArray(), w.Ids.AsSpan(r * 16, 16).ToArray());
                    Assert.Equal(ids.AsSpan((int)start + 1, 16).ToArray(), w.Labels.AsSpan(r * 16, 16).ToArray());
                }
                all.Add((long[])w.Ids.Clone());
            }
            return [.. all];
        }
        var a = Draw(3, 5); var b = Draw(3, 5); var c = Draw(4, 5);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.Equal(79, new TokenWindows(stream, 16, 4, new Random(1)).BatchesPerEpoch);   // ceil(4999 / 64)
    }

    [Fact]
    public void BadTokenFilesAreRefusedWithTheirIds()
    {
        using var tmp = new TempDir();
        string P(string name) => tmp.File(name);
        EngineException Fails(string path) => Assert.Throws<EngineException>(() => TokenStream.Open(path));

        Assert.Equal("DataFileNotFound", Fails(P("none.npy")).ErrorId);
        Npy.WriteNpz(P("t.npz"), [new NamedArray("x", [4], new long[] { 1, 2, 3, 4 })]);
        Assert.Equal("TokenDataFormatUnsupported", Fails(P("t.npz")).ErrorId);
        File.WriteAllText(P("junk.npy"), "not numpy at all");
        Assert.Equal("NpyInvalid", Fails(P("junk.npy")).ErrorId);
        WriteNpy(P("2d.npy"), "<i4", "(2, 3)", new byte[24]);
        var e = Fails(P("2d.npy"));
        Assert.Equal("TokenDataShapeInvalid", e.ErrorId);
        Assert.Contains("2d.npy", e.Message);
        WriteNpy(P("float.npy"), "<f4", "(3,)", new byte[12]);
        Assert.Equal("TokenDataTypeInvalid", Fails(P("float.npy")).ErrorId);
        WriteNpy(P("short.npy"), "<i4", "(100,)", new byte[40]);
        Assert.Equal("NpyTruncated", Fails(P("short.npy")).ErrorId);
        WriteNpy(P("big-endian.npy"), ">i4", "(3,)", new byte[12]);
        Assert.Equal("NpyTypeUnsupported", Fails(P("big-endian.npy")).ErrorId);
        WriteNpy(P("empty.npy"), "<i4", "(0,)", []);
        Assert.Equal("DataFileEmpty", Fails(P("empty.npy")).ErrorId);
    }
}

/// <summary>Measures the process's managed memory, so it runs alone: tests running beside it would count in it.</summary>
[Collection(nameof(ProcessWideLimits))]
public class TokenStreamMemoryTests
{
    [Fact]
    public void OpeningMapsTheFileInsteadOfCopyingIt()
    {
        using var tmp = new TempDir();
        const int n = 16 << 20;   // 64 MB of int32 ids
        var raw = new byte[4L * n];
        for (int i = 0; i < n; i++) BitConverter.TryWriteBytes(raw.AsSpan(i * 4), i % 50_000);
        TokenStreamTests.WriteNpy(tmp.File("big.npy"), "<i4", $"({n},)", raw);
        raw = [];
        GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
        long before = GC.GetTotalMemory(forceFullCollection: true);
        using var stream = TokenStream.Open(tmp.File("big.npy"));
        var windows = new TokenWindows(stream, 128, 32, new Random(1));
        for (int i = 0; i < 20; i++) windows.Next();
        long after = GC.GetTotalMemory(forceFullCollection: true);
        Assert.True(after - before < 4 << 20, $"managed memory grew by {(after - before) >> 20} MB for a 64 MB token file");
        Assert.Equal(49_999, stream.MaxId);
    }
}
