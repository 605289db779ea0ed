namespace ModelCompression.Native.Onnx;

/// <summary>A file as it was when read: its path, length and last write time.</summary>
public sealed record FileIdentity(string Path, long Length, DateTime LastWriteUtc)
{
    public static FileIdentity Of(string path)
    {
        var info = Final(path);
        return new FileIdentity(path, info.Length, info.LastWriteTimeUtc);
    }

    /// <summary>True when the file is still there, with the same length and write time.</summary>
    public bool IsUnchanged()
    {
        try
        {
            var info = Final(Path);
            return info.Exists && info.Length == Length && info.LastWriteTimeUtc == LastWriteUtc;
        }
        catch (IOException) { return false; }
    }

    /// <summary>The file itself, through any links (a link's own length and time say nothing of its target).</summary>
    static FileInfo Final(string path)
    {
        var info = new FileInfo(path);
        return info.LinkTarget is null ? info : info.ResolveLinkTarget(returnFinalTarget: true) as FileInfo ?? info;
    }
}
