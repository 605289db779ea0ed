using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace ModelCompression.Native.Onnx;

/// <summary>File-system calls .NET has no API for: hard links, and copies the kernel makes without passing the bytes through user memory.</summary>
static partial class NativeFiles
{
    /// <summary>A second name for the same bytes; false when the file system, the platform or the permissions do not allow it.</summary>
    public static bool TryHardLink(string existing, string link)
    {
        try
        {
            return OperatingSystem.IsWindows() ? CreateHardLinkW(link, existing, IntPtr.Zero) : LinkUnix(existing, link) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    /// <summary>
    /// Copies up to <paramref name="length"/> bytes between two files inside the kernel (Linux copy_file_range; on
    /// file systems that share extents, no copy at all). Returns how many bytes it copied: 0 where it cannot, and the
    /// caller copies the rest itself.
    /// </summary>
    public static long TryKernelCopy(SafeFileHandle source, long sourceOffset, SafeFileHandle target, long targetOffset, long length, CancellationToken cancel)
    {
        if (!OperatingSystem.IsLinux()) return 0;
        long done = 0;
        try
        {
            int fdIn = (int)source.DangerousGetHandle(), fdOut = (int)target.DangerousGetHandle();
            while (done < length)
            {
                cancel.ThrowIfCancellationRequested();
                long inOffset = sourceOffset + done, outOffset = targetOffset + done;
                nint n = CopyFileRange(fdIn, ref inOffset, fdOut, ref outOffset, (nuint)Math.Min(length - done, 1L << 30), 0);
                if (n <= 0) break;
                done += n;
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        return done;
    }

    [LibraryImport("libc", EntryPoint = "link", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int LinkUnix(string existing, string link);

    [LibraryImport("libc", EntryPoint = "copy_file_range")]
    private static partial nint CopyFileRange(int fdIn, ref long offIn, int fdOut, ref long offOut, nuint length, uint flags);

    [LibraryImport("kernel32.dll", StringMarshalling = StringMarshalling.Utf16)]
    [return: MarshalAs(UnmanagedType.Bool)]
    private static partial bool CreateHardLinkW(string link, string existing, IntPtr security);
}
