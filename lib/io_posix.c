/* pread/pwrite file I/O when liburing is absent: being written (issue 6). */
